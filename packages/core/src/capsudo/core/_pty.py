"""The daemon's side of an interactive session: the program on a pty, relayed.

The program runs in a new session whose controlling terminal is the slave of
a fresh pty, on stdin, stdout and stderr, with no other descriptor. The
daemon relays the client's delegated stdin to the master and the master to
the client's delegated stdout, on the event loop and without ever changing a
file description it shares with the client (it may be the user's terminal):
each delegated descriptor gets a view of its own that never blocks the loop.
A view works on a copy of the client's descriptor, never on the file opened
again by name: that would be an open() with the daemon's privilege.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import signal
import socket
import stat
import struct
import subprocess
import termios
import threading
from collections.abc import Mapping, Sequence
from contextlib import asynccontextmanager
from typing import AsyncIterator

import trio

from capsudo.proto import Winsize

from ._label import exec_label
from ._spawn import SpawnError, pidfd_or_kill, signal_group
from ._status import exit_status

DEFAULT_ROWS, DEFAULT_COLS = 24, 80

# After the program exited, what still holds the slave (a background
# grandchild) may keep the master open forever: stop relaying once the master
# has been silent this long, and in any case this long after the exit
# (not counting time spent waiting for the client to take output).
QUIET_AFTER_EXIT = 0.2
DRAIN_BOUND = 1.0

# A pty master hands out a few KiB per read; gathering reads into one large
# write to the client costs far fewer system calls on the client's side.
OUTPUT_BATCH = 256 * 1024
INPUT_CHUNK = 16 * 1024

# /dev/null, /dev/zero and their kin (the kernel's "mem" devices) never block.
_MEM_MAJOR = 1


# While the client is not in the foreground of its terminal (stopped, or put
# in the background), how often to look again before reading that terminal.
FOREGROUND_POLL = 0.05


def client_in_foreground(pid: int) -> bool:
    """False while `pid` is stopped or its process group is not the foreground
    one of its terminal; True otherwise, and when /proc cannot tell.

    The daemon reads the caller's terminal on the client's behalf. When the
    shell stops the client (^Z) and takes the terminal back, what is typed
    next (`fg`) is the shell's: the daemon must not read it.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat_file:
            line = stat_file.read()
    except OSError:
        return True
    # The command name in parentheses may hold anything: fields follow its last ")".
    fields = line[line.rfind(b")") + 2 :].split()
    try:
        state, pgrp, tty_nr, tpgid = fields[0], int(fields[2]), int(fields[4]), int(fields[5])
    except (IndexError, ValueError):
        return True
    if state in (b"T", b"t"):  # stopped, or stopped by a tracer
        return False
    if tty_nr == 0 or tpgid <= 0:
        return True  # no controlling terminal to be in the background of
    return tpgid == pgrp


def _pack_winsize(winsize: Winsize | None) -> bytes:
    if winsize is None or not (winsize.rows and winsize.cols):
        return struct.pack("HHHH", DEFAULT_ROWS, DEFAULT_COLS, 0, 0)
    return struct.pack("HHHH", winsize.rows, winsize.cols, winsize.xpixels, winsize.ypixels)


# --- private views of the client's descriptors ---------------------------------


class _View:
    """One of the client's descriptors, as the relay uses it: a copy of a
    pipe or terminal the client had already made non-blocking."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def _try_read(self, size: int) -> bytes | None:
        try:
            return os.read(self.fd, size)
        except BlockingIOError:
            return None

    def _try_write(self, data: memoryview) -> int | None:
        try:
            return os.write(self.fd, data)
        except BlockingIOError:
            return None

    async def wait_readable(self) -> None:
        await trio.lowlevel.wait_readable(self.fd)

    async def _wait_writable(self) -> None:
        await trio.lowlevel.wait_writable(self.fd)

    async def read_ready(self, size: int) -> bytes | None:
        """After wait_readable: the bytes, b"" at the end, None for "not yet"."""
        try:
            return self._try_read(size)
        except OSError as exc:
            if exc.errno == errno.EIO:  # a terminal that hung up: its input is over
                return b""
            raise

    async def write_all(self, data: memoryview) -> None:
        while data:
            written = self._try_write(data)
            if written is None:
                await self._wait_writable()
            else:
                data = data[written:]

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            trio.lowlevel.notify_closing(fd)
            os.close(fd)


class _PlainView(_View):
    """The mem devices (/dev/null, /dev/zero...): reads and writes never
    block, and epoll refuses them. Should the client have made one
    non-blocking (where that means anything), "not now" is answered by
    retrying a little later."""

    _backoff = False

    async def wait_readable(self) -> None:
        if self._backoff:
            self._backoff = False
            await trio.sleep(0.01)
        else:
            await trio.lowlevel.checkpoint()

    async def _wait_writable(self) -> None:
        await trio.sleep(0.01)

    async def read_ready(self, size: int) -> bytes | None:
        data = await super().read_ready(size)
        self._backoff = data is None
        return data

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)


class _SocketView(_View):
    """A socket: MSG_DONTWAIT on each call leaves the shared description alone."""

    def __init__(self, fd: int) -> None:
        super().__init__(fd)
        # Without a default timeout, wrapping does not touch O_NONBLOCK.
        self._socket = socket.socket(fileno=fd)

    def _try_read(self, size: int) -> bytes | None:
        try:
            return self._socket.recv(size, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return None

    def _try_write(self, data: memoryview) -> int | None:
        try:
            return self._socket.send(data, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
        except BlockingIOError:
            return None

    def close(self) -> None:
        if self.fd >= 0:
            trio.lowlevel.notify_closing(self.fd)
            self.fd = -1
            self._socket.close()


class _ThreadedView(_View):
    """Anything else: blocking calls in a worker thread, abandoned on cancel.

    Where the descriptor can be polled (a blocking pipe or terminal: the
    client's description is shared, so its O_NONBLOCK is not ours to set),
    the wait happens on the event loop and the thread only makes a call
    that is ready: a session that ends while its client types nothing
    leaves no read behind, blocked forever. Each view
    has a thread limit of its own, so that views can never starve one another
    (or anything else of the daemon) of trio's shared worker threads.

    An abandoned call may still run when the view is closed, so the
    descriptor is closed by whoever finishes last: its number must not be
    reused under a call still in flight.
    """

    def __init__(self, fd: int) -> None:
        super().__init__(fd)
        self._lock = threading.Lock()
        self._busy = 0
        self._closing = False
        self._limiter = trio.CapacityLimiter(1)
        self._pollable = _pollable(fd)

    def _call(self, function, *args):
        # Counted here, in the thread, so that a call cancelled before its
        # thread started leaves nothing behind.
        with self._lock:
            if self._closing:
                raise trio.ClosedResourceError
            self._busy += 1
        try:
            while True:
                try:
                    return function(self.fd, *args)
                except BlockingIOError:
                    # Made non-blocking by someone else, and not pollable.
                    threading.Event().wait(0.01)
        finally:
            with self._lock:
                self._busy -= 1
                last = self._closing and self._busy == 0
            if last:
                os.close(self.fd)

    async def _run(self, function, *args):
        return await trio.to_thread.run_sync(
            self._call, function, *args, abandon_on_cancel=True, limiter=self._limiter
        )

    async def wait_readable(self) -> None:
        if self._pollable:
            await trio.lowlevel.wait_readable(self.fd)
        else:
            await trio.lowlevel.checkpoint()

    async def read_ready(self, size: int) -> bytes | None:
        try:
            return await self._run(os.read, size)
        except OSError as exc:
            if exc.errno == errno.EIO:
                return b""
            raise

    async def write_all(self, data: memoryview) -> None:
        while data:
            if self._pollable:
                await trio.lowlevel.wait_writable(self.fd)
            data = data[await self._run(os.write, data) :]

    def close(self) -> None:
        with self._lock:
            if self._closing:
                return
            self._closing = True
            idle = self._busy == 0
        if self._pollable:
            trio.lowlevel.notify_closing(self.fd)
        if idle:
            os.close(self.fd)


def _pollable(fd: int) -> bool:
    """Whether epoll accepts fd (regular files and some devices it refuses)."""
    probe = select.epoll()
    try:
        probe.register(fd, select.EPOLLIN)
    except OSError:
        return False
    finally:
        probe.close()
    return True


def _open_view(fd: int, reading: bool) -> _View:
    """A view of the client's descriptor that can never block the event loop,
    and that leaves the client's own file description exactly as it was."""
    return _view_of(*_prepare_view(fd, reading))


def _view_of(kind: type[_View], private: int) -> _View:
    """The view, owning `private`; closed when the view cannot be made (a
    socket.socket() that refuses the descriptor, say), never left behind."""
    try:
        return kind(private)
    except BaseException:
        os.close(private)
        raise


def _prepare_view(fd: int, reading: bool) -> tuple[type[_View], int]:
    """The kind of view fd needs, and a descriptor of our own for it.

    Always a copy of the client's own descriptor, never the file reopened by
    name: a reopening (/proc/self/fd/N) is an open() with the daemon's
    privilege, which may grant what the client's descriptor never carried.
    """
    info = os.fstat(fd)
    mode = info.st_mode
    if stat.S_ISCHR(mode) and os.major(info.st_rdev) == _MEM_MAJOR:
        return _PlainView, os.dup(fd)
    if stat.S_ISSOCK(mode):
        return _SocketView, os.dup(fd)
    if (stat.S_ISFIFO(mode) or (stat.S_ISCHR(mode) and os.isatty(fd))) and (
        fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK
    ):
        # Already non-blocking on the client's side: use it as it is.
        return _View, os.dup(fd)
    # A blocking pipe or terminal cannot be made non-blocking without
    # changing the client's file description, so it gets blocking calls in a
    # thread (started only once epoll says the call is ready). Regular files
    # too: one on a network or FUSE file system blocks for as long as its
    # server likes, and the client may be that server.
    return _ThreadedView, os.dup(fd)


async def _open_view_off_loop(fd: int, reading: bool) -> _View:
    """_open_view, with the descriptor's inspection (fstat may wait on a file
    system's server, as above) in a worker thread. Cancelled, it leaves no
    descriptor behind, whenever the abandoned thread finishes."""
    lock = threading.Lock()
    outcome: dict[str, object] = {}

    def prepare() -> None:
        prepared = _prepare_view(fd, reading)
        with lock:
            if outcome.get("abandoned"):
                os.close(prepared[1])
            else:
                outcome["prepared"] = prepared

    try:
        await trio.to_thread.run_sync(prepare, abandon_on_cancel=True, limiter=trio.CapacityLimiter(1))
    except trio.Cancelled:
        with lock:
            outcome["abandoned"] = True
            prepared = outcome.pop("prepared", None)
        if prepared is not None:
            os.close(prepared[1])
        raise
    return _view_of(*outcome["prepared"])


# --- starting the program ------------------------------------------------------


def _take_the_terminal() -> None:
    """In the child, between setsid() and exec: the slave, on 0, 1 and 2,
    becomes the controlling terminal of the program's new session."""
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _spawn(
    executable: str, argv: Sequence[str], env: Mapping[str, str], winsize: bytes, label: str | None
) -> tuple[subprocess.Popen, int]:
    """Start the program on a new pty; (process, master). Raises SpawnError.

    On every way out, whatever was opened here is closed again but the
    master handed back: a descriptor lost per failed session would, after
    enough of them, leave the daemon unable to serve any session at all.
    argv[0] stays as the client asked, as in a non-interactive session.
    """
    try:
        master, slave = os.openpty()
    except OSError as exc:
        raise SpawnError(f"cannot open a terminal: {exc.strerror}") from None
    try:
        fcntl.ioctl(master, termios.TIOCSWINSZ, winsize)
        os.set_blocking(master, False)
        with exec_label(label):
            process = subprocess.Popen(
                list(argv),
                executable=executable,
                env=dict(env),
                stdin=slave,
                stdout=slave,
                stderr=slave,
                close_fds=True,
                start_new_session=True,
                restore_signals=True,
                preexec_fn=_take_the_terminal,
            )
    except BaseException as exc:
        os.close(master)
        if isinstance(exc, OSError):
            raise SpawnError(exc.strerror or str(exc)) from None
        if isinstance(exc, subprocess.SubprocessError):
            raise SpawnError("cannot give the program its terminal") from None
        raise
    finally:
        os.close(slave)
    return process, master


# --- the running program ---------------------------------------------------------


class PtyProgram:
    """A program on a pty. `wait()` runs the relay: the session calls it once,
    right away, and it returns when the program exited and its output has
    been relayed."""

    def __init__(
        self,
        process: subprocess.Popen,
        pidfd: int,
        master: int,
        source: _View,
        sink: _View,
        client_pid: int | None = None,
    ) -> None:
        self._process = process
        self.pid = process.pid
        # Whose turn at the terminal decides whether its input may be read (None: always).
        self._client_pid = client_pid
        self._pidfd = pidfd
        self._master = master
        self._source = source
        self._sink = sink
        self._status: int | None = None
        self._exited = trio.Event()
        self._exit_time = 0.0
        self._drain_deadline = 0.0
        self._idle: trio.CancelScope | None = None
        self._sink_broken = False
        self._at_line_start = True
        self._relaying = False
        self._done = trio.Event()

    async def wait(self) -> int:
        """The status, once the program exited and what it wrote was relayed."""
        if not self._relaying:
            self._relaying = True
            await self._relay()
            self._done.set()
        await self._done.wait()
        assert self._status is not None
        return self._status

    def resize(self, winsize: Winsize) -> None:
        """Set the terminal's size; the kernel signals the foreground group."""
        if self._master >= 0 and winsize.rows and winsize.cols:
            try:
                fcntl.ioctl(self._master, termios.TIOCSWINSZ, _pack_winsize(winsize))
            except OSError:
                pass

    # Three tasks; none waits for another except through events, and none
    # raises for anything the program or the client did.

    async def _relay(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._reap)
            input_scope = trio.CancelScope()

            async def relay_input() -> None:
                with input_scope:
                    await self._relay_input()

            nursery.start_soon(relay_input)
            await self._relay_output()
            await self._exited.wait()
            # Not one more byte of the client's input: it belongs to whatever
            # reads the client's terminal next.
            input_scope.cancel()

    async def _reap(self) -> None:
        if not self._exited.is_set():
            await trio.lowlevel.wait_readable(self._pidfd)
            # Reaped through its Popen, which would otherwise, once collected,
            # wait for that pid again: by then perhaps another session's program.
            self._status = exit_status(self._process.wait())
            self._exit_time = trio.current_time()
            self._drain_deadline = self._exit_time + DRAIN_BOUND
            self._exited.set()
        if self._idle is not None:
            self._idle.cancel()

    async def _relay_output(self) -> None:
        master = self._master
        view = memoryview(bytearray(OUTPUT_BATCH))
        while True:
            filled = 0
            ended = False
            # Read before waiting: while output flows the master is usually ready.
            while filled < OUTPUT_BATCH:
                try:
                    count = os.readv(master, (view[filled:],))
                except BlockingIOError:
                    break
                except OSError:
                    count = 0  # EIO: every holder of the slave has closed it
                if count == 0:
                    ended = True
                    break
                filled += count
            if filled:
                await self._deliver(view[:filled])
            if ended:
                return
            if self._exited.is_set():
                if trio.current_time() >= self._drain_deadline:
                    return
                if filled:
                    continue
                # Something still holds the slave (a background grandchild):
                # give it a short moment, then end without it.
                with trio.move_on_at(min(trio.current_time() + QUIET_AFTER_EXIT, self._drain_deadline)):
                    await trio.lowlevel.wait_readable(master)
                    continue
                return
            if not filled:
                with trio.CancelScope() as self._idle:
                    await trio.lowlevel.wait_readable(master)
                self._idle = None

    async def _deliver(self, data: memoryview) -> None:
        if self._sink_broken:
            return
        started = trio.current_time()
        try:
            await self._sink.write_all(data)
        except (OSError, trio.ClosedResourceError):
            # The client's stdout is gone; keep draining so that the program
            # is never stuck on a full terminal.
            self._sink_broken = True
        if self._exited.is_set():
            # Waiting for the client to take output does not count against the drain.
            self._drain_deadline += trio.current_time() - max(started, self._exit_time)

    async def _relay_input(self) -> None:
        source = self._source
        try:
            while not self._exited.is_set():
                # Read only what the terminal can take now: a byte read and not
                # delivered would be a keystroke stolen from the client.
                await trio.lowlevel.wait_writable(self._master)
                await source.wait_readable()
                if self._exited.is_set():
                    return
                if self._client_pid is not None and not client_in_foreground(self._client_pid):
                    # Typed input is the shell's now; look again after a moment,
                    # not at once (the terminal stays readable all along).
                    await trio.sleep(FOREGROUND_POLL)
                    continue
                data = await source.read_ready(INPUT_CHUNK)
                if data is None:
                    continue
                if not data:
                    await self._end_of_input()
                    return
                await self._write_master(data)
        except (OSError, trio.ClosedResourceError):
            return  # the client's stdin failed, or the terminal went away

    async def _write_master(self, data: bytes) -> None:
        pending = memoryview(data)
        while pending:
            try:
                written = os.write(self._master, pending)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self._master)
                continue
            pending = pending[written:]
        self._at_line_start = data[-1:] in (b"\n", b"\r")

    async def _end_of_input(self) -> None:
        """The client's input ended: the program reads end-of-file, as after ^D."""
        try:
            attributes = termios.tcgetattr(self._master)
        except termios.error:
            return
        eof = attributes[6][termios.VEOF]
        if isinstance(eof, int):
            eof = bytes([eof])
        if eof == b"\0":  # disabled: this terminal has no end-of-file character
            return
        canonical = attributes[3] & termios.ICANON
        # In canonical mode a first ^D only hands over a pending partial line.
        await self._write_master(eof * 2 if canonical and not self._at_line_start else eof)

    async def _stop(self) -> None:
        """Kill the program if it still runs, and reap it."""
        if not self._exited.is_set():
            signal_group(self.pid, signal.SIGKILL)
            await self._reap()

    def _close(self) -> None:
        for fd in (self._master, self._pidfd):
            if fd >= 0:
                trio.lowlevel.notify_closing(fd)
                os.close(fd)
        self._master = self._pidfd = -1
        self._source.close()
        self._sink.close()


@asynccontextmanager
async def open_pty_program(
    executable: str,
    argv: Sequence[str],
    env: Mapping[str, str],
    stdio_fds: Sequence[int],
    winsize: Winsize | None,
    *,
    client_pid: int | None = None,
    label: str | None = None,
) -> AsyncIterator[PtyProgram]:
    """Start argv on a new pty relayed to the client's stdin and stdout.

    The client's stderr is not used: the program's stderr is the terminal.
    Leaving the context before the program ended kills its process group.
    With `client_pid`, a terminal on stdin is read only while that process
    has its turn in the terminal's foreground. With `label`, the program runs
    under the caller's security label.
    Raises SpawnError when the program cannot be started.
    """
    # Whatever fails on the way (a view, the pty, the start, the pidfd),
    # what was opened before it is closed: nothing of a failed session stays.
    views: list[_View] = []
    master = -1
    try:
        views.append(await _open_view_off_loop(stdio_fds[0], reading=True))
        views.append(await _open_view_off_loop(stdio_fds[1], reading=False))
        process, master = _spawn(executable, argv, env, _pack_winsize(winsize), label)
        pidfd = pidfd_or_kill(process.pid, reap=process.wait)
    except BaseException:
        if master >= 0:
            os.close(master)
        for view in views:
            view.close()
        raise
    gate = client_pid if client_pid is not None and os.isatty(stdio_fds[0]) else None
    program = PtyProgram(process, pidfd, master, views[0], views[1], client_pid=gate)
    try:
        yield program
    finally:
        with trio.CancelScope(shield=True):
            await program._stop()
        program._close()
