"""The daemon's side of an interactive session: the program on a pty, relayed.

The program runs in a new session whose controlling terminal is the slave of
a fresh pty, on stdin, stdout and stderr, with no other descriptor. The
daemon relays the client's delegated stdin to the master and the master to
the client's delegated stdout, on the event loop and without ever changing a
file description it shares with the client (it may be the user's terminal):
each delegated descriptor gets a view of its own that never blocks the loop
(see _relay_views).
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import struct
import subprocess
import termios
from collections.abc import Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import AsyncIterator

import trio

from capsudo.proto import Winsize

from ._job_control import (
    CONTINUED,
    STOPPED,
    client_pid as pid_of_pidfd,
    monitor_program,
    stopped_below,
    suspend_client,
)
from ._label import exec_label
from ._relay_views import RelayView, open_relay_view_off_loop
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

# After the program stopped: how long its last output may take to reach the
# client's terminal, and how long the client may take to stop in its turn.
OUTPUT_SETTLE_BOUND = 0.5
CLIENT_STOP_BOUND = 2.0

# After a ^Z went to the program's terminal with no stop reported: how long,
# and how often, to look for a stopped process below the program's own. The
# kernel turns the byte into SIGTSTP in the tty's own work queue, which on a
# busy machine can run a second or more later; the look costs a /proc walk
# every poll, and only after a ^Z.
TYPED_STOP_BOUND = 3.0
TYPED_STOP_POLL = 0.05

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


# --- starting the program ------------------------------------------------------


def _take_the_terminal(before_exec: Callable[[], None] | None = None) -> None:
    """In the child, between setsid() and exec: the slave, on 0, 1 and 2,
    becomes the controlling terminal of the program's new session; then
    `before_exec` (ids, limits, cgroup), as for a plain program."""
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    if before_exec is not None:
        before_exec()


def _monitor_below(report: int, before_exec: Callable[[], None] | None) -> None:
    """The monitor stays behind as the session's leader; the program's own process goes on to exec."""
    _take_the_terminal()
    monitor_program(report)
    if before_exec is not None:
        before_exec()


def _spawn(
    executable: str,
    argv: Sequence[str],
    env: Mapping[str, str],
    winsize: bytes,
    label: str | None,
    before_exec: Callable[[], None] | None = None,
    report: int | None = None,
) -> tuple[subprocess.Popen, int]:
    """Start the program on a new pty; (process, master). Raises SpawnError.

    With `report` (a pipe's write end), the process started leads the
    session as a monitor and the program runs below it (see _job_control).

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
                preexec_fn=(partial(_take_the_terminal, before_exec) if report is None
                            else partial(_monitor_below, report, before_exec)),
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


class JobControl:
    """What a session with job control has beyond the program: the monitor's
    report pipe, the program's own pid, and the client to stop."""

    def __init__(self, report: int, program_pid: int, client_pidfd: int, peer_uid: int) -> None:
        self.report = report
        self.program_pid = program_pid
        self.client_pidfd = client_pidfd
        self.peer_uid = peer_uid

    def close(self) -> None:
        trio.lowlevel.notify_closing(self.report)
        os.close(self.report)
        os.close(self.client_pidfd)


def _read_program_pid(report: int) -> int | None:
    """The pid the monitor writes first (by the time the exec succeeded it is there)."""
    data = b""
    while len(data) < 4:
        try:
            chunk = os.read(report, 4 - len(data))
        except OSError:
            return None
        if not chunk:
            return None
        data += chunk
    return int.from_bytes(data, "little")


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
        source: RelayView,
        sink: RelayView,
        client_pid: int | None = None,
        job_control: JobControl | None = None,
    ) -> None:
        self._process = process
        # The program's process group: with job control, not the monitor's.
        self.pid = job_control.program_pid if job_control is not None else process.pid
        self._job_control = job_control
        self._stopped = False
        self._watching_typed_stop = False
        self._nursery: trio.Nursery | None = None
        self._delivering = False
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
        if self._stopped:
            # A client that stopped for the program sends its size when it
            # continues: that is the word to continue the program too.
            self._continue()

    def _continue(self) -> None:
        self._stopped = False
        signal_group(self.pid, signal.SIGCONT)

    # Three tasks; none waits for another except through events, and none
    # raises for anything the program or the client did.

    async def _relay(self) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._reap)
            input_scope = trio.CancelScope()

            async def relay_input() -> None:
                with input_scope:
                    await self._relay_input()

            nursery.start_soon(relay_input)
            if self._job_control is not None:
                nursery.start_soon(self._follow_stops)
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
        self._delivering = True
        try:
            await self._sink.write_all(data)
        except (OSError, trio.ClosedResourceError):
            # The client's stdout is gone; keep draining so that the program
            # is never stuck on a full terminal.
            self._sink_broken = True
        finally:
            self._delivering = False
        if self._exited.is_set():
            # Waiting for the client to take output does not count against the drain.
            self._drain_deadline += trio.current_time() - max(started, self._exit_time)

    # --- job control -----------------------------------------------------------------

    async def _follow_stops(self) -> None:
        """Read the monitor's reports until the program has exited."""
        assert self._job_control is not None
        report = self._job_control.report
        while True:
            try:
                data = os.read(report, 64)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(report)
                continue
            except OSError:
                return
            if not data:
                return  # the monitor has exited
            if data[-1:] == STOPPED:
                self._program_stopped()
            elif data[-1:] == CONTINUED:
                self._stopped = False  # continued by someone else: nothing to wait for

    def _program_stopped(self) -> None:
        if not self._stopped and self._nursery is not None:
            self._stopped = True
            self._nursery.start_soon(self._suspend_client)

    def _typed_stop(self, data: bytes) -> bool:
        """Whether `data`, just written, holds the terminal's suspend
        character while it makes signals and the program's group is in front."""
        try:
            attributes = termios.tcgetattr(self._master)
            in_front = os.tcgetpgrp(self._master) == self.pid
        except (OSError, termios.error):
            return False
        suspend = attributes[6][termios.VSUSP]
        if isinstance(suspend, int):
            suspend = bytes([suspend])
        return in_front and bool(attributes[3] & termios.ISIG) and suspend != b"\0" and suspend in data

    async def _watch_typed_stop(self) -> None:
        """A ^Z reached the program: if the monitor reports no stop, look
        for one below the program (see stopped_below) for a moment."""
        try:
            deadline = trio.current_time() + TYPED_STOP_BOUND
            while not self._stopped and not self._exited.is_set() and trio.current_time() < deadline:
                await trio.sleep(TYPED_STOP_POLL)
                if not self._stopped and not self._exited.is_set() and stopped_below(self.pid):
                    self._program_stopped()
        finally:
            self._watching_typed_stop = False

    async def _suspend_client(self) -> None:
        """The program stopped: stop the client too, and continue the program
        when the client is back in its terminal's foreground."""
        assert self._job_control is not None
        pidfd, uid = self._job_control.client_pidfd, self._job_control.peer_uid
        await self._let_output_settle()
        # What the program wrote before it stopped (a full-screen program
        # leaving its screen) reaches the terminal before the shell has it.
        if not self._stopped or not suspend_client(pidfd, uid):
            if self._stopped:
                self._continue()  # nobody could continue it: ^Z does nothing, as it used to
            return
        # First the client leaves the foreground (its shell has the terminal),
        # then it comes back (`fg`). Its Winsize usually says so first; a
        # client that sends none is seen back through /proc.
        deadline = trio.current_time() + CLIENT_STOP_BOUND
        left = False
        while self._stopped:
            pid = pid_of_pidfd(pidfd)
            if pid is None:
                return  # the client is gone; the session hangs the program up
            in_front = client_in_foreground(pid)
            if not left:
                if not in_front:
                    left = True
                elif trio.current_time() > deadline:
                    self._continue()  # it did not stop (its stop was discarded): go on
                    return
            elif in_front:
                self._continue()
                return
            await trio.sleep(FOREGROUND_POLL)

    async def _let_output_settle(self) -> None:
        deadline = trio.current_time() + OUTPUT_SETTLE_BOUND
        while trio.current_time() < deadline and self._master >= 0:
            readable, _, _ = select.select([self._master], [], [], 0)
            if not readable and not self._delivering:
                return
            await trio.sleep(0.005)

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
                if self._client_pid is not None and not select.select([source.fd], [], [], 0)[0]:
                    # The shell read what was there before the client came back
                    # (`fg`): a read now would wait, and take what is typed to
                    # the shell after the session.
                    continue
                data = await source.read_ready(INPUT_CHUNK)
                if data is None:
                    continue
                if not data:
                    await self._end_of_input()
                    return
                await self._write_master(data)
                if (
                    self._job_control is not None
                    and not self._watching_typed_stop
                    and self._nursery is not None
                    and self._typed_stop(data)
                ):
                    self._watching_typed_stop = True
                    self._nursery.start_soon(self._watch_typed_stop)
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
        if self._job_control is not None:
            self._job_control.close()
            self._job_control = None
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
    client_pidfd: int | None = None,
    peer_uid: int | None = None,
    label: str | None = None,
    before_exec: Callable[[], None] | None = None,
) -> AsyncIterator[PtyProgram]:
    """Start argv on a new pty relayed to the client's stdin and stdout.

    The client's stderr is not used: the program's stderr is the terminal.
    Leaving the context before the program ended kills its process group.
    With `client_pid`, a terminal on stdin is read only while that process
    has its turn in the terminal's foreground. With `client_pidfd` (taken
    over, closed here) and `peer_uid` too, ^Z stops the program and then
    the client (see _job_control). With `label`, the program runs under the
    caller's security label. `before_exec` runs in the program's process
    once it has its terminal, just before exec.
    Raises SpawnError when the program cannot be started.
    """
    # Whatever fails on the way (a view, the pty, the start, the pidfd),
    # what was opened before it is closed: nothing of a failed session stays.
    views: list[RelayView] = []
    master = -1
    gate = client_pid if client_pid is not None and os.isatty(stdio_fds[0]) else None
    # Job control only where a client can be stopped and its terminal is the user's.
    reporting = gate is not None and client_pidfd is not None and peer_uid is not None
    report_read = report_write = -1
    job_control = None
    try:
        views.append(await open_relay_view_off_loop(stdio_fds[0], reading=True))
        views.append(await open_relay_view_off_loop(stdio_fds[1], reading=False))
        if reporting:
            report_read, report_write = os.pipe2(os.O_CLOEXEC)
        try:
            process, master = _spawn(
                executable, argv, env, _pack_winsize(winsize), label, before_exec,
                report_write if reporting else None,
            )
        finally:
            if report_write >= 0:
                os.close(report_write)
        pidfd = pidfd_or_kill(process.pid, reap=process.wait)
        if reporting:
            program_pid = _read_program_pid(report_read)
            if program_pid is None:
                signal_group(process.pid, signal.SIGKILL)
                process.wait()
                os.close(pidfd)
                raise SpawnError("the program's monitor did not start it")
            os.set_blocking(report_read, False)
            assert client_pidfd is not None and peer_uid is not None
            job_control = JobControl(report_read, program_pid, client_pidfd, peer_uid)
    except BaseException:
        if master >= 0:
            os.close(master)
        for view in views:
            view.close()
        if job_control is None:
            if report_read >= 0:
                os.close(report_read)
            if client_pidfd is not None:
                os.close(client_pidfd)
        raise
    if job_control is None and client_pidfd is not None:
        os.close(client_pidfd)
    program = PtyProgram(process, pidfd, master, views[0], views[1], client_pid=gate, job_control=job_control)
    try:
        yield program
    finally:
        with trio.CancelScope(shield=True):
            await program._stop()
        program._close()
