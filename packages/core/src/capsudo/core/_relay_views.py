"""The pty relay's views of a client's descriptors: copies, never reopened, never blocking the loop.

The daemon relays a client's delegated stdin and stdout to and from a pty
master, on its event loop, without ever changing a file description it
shares with the client (it may be the user's terminal). Each descriptor gets
a view of its own, on a copy (dup) of it. They differ from the multiplexed
channel's views (capsudo.transport.DescriptorView) in two ways that come
from whose descriptors these are. Nothing is ever opened again by name:
every descriptor here is a peer's, and an open() by name would be one with
the daemon's privilege. And a regular file may never answer (the client may
serve it over FUSE), so its reads and writes, and even the inspection of a
descriptor, happen in a worker thread, never on the loop.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import socket
import stat
import threading

import trio

from capsudo.transport import DescriptorView, SocketView

# /dev/null, /dev/zero and their kin (the kernel's "mem" devices) never block.
_MEM_MAJOR = 1


class RelayView(DescriptorView):
    """One of the client's descriptors, as the relay uses it: a copy of a
    pipe or terminal the client had already made non-blocking.

    The channel's view, and one thing more: read_ready() takes what
    wait_readable() announced, a hung-up terminal's EIO as its end.
    """

    kind = "relay"

    async def read_ready(self, size: int) -> bytes | None:
        """After wait_readable: the bytes, b"" at the end, None for "not yet"."""
        try:
            return self.read_nowait(size)
        except OSError as exc:
            if exc.errno == errno.EIO:  # a terminal that hung up: its input is over
                return b""
            raise


class PlainRelayView(RelayView):
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

    async def wait_writable(self) -> None:
        await trio.sleep(0.01)

    async def read_ready(self, size: int) -> bytes | None:
        data = await super().read_ready(size)
        self._backoff = data is None
        return data


class SocketRelayView(RelayView, SocketView):
    """A socket: MSG_DONTWAIT on each call leaves the shared description alone."""

    def __init__(self, fd: int) -> None:
        # Without a default timeout, wrapping does not touch O_NONBLOCK.
        SocketView.__init__(self, socket.socket(fileno=fd))


class ThreadedRelayView(RelayView):
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


def open_relay_view(fd: int, reading: bool) -> RelayView:
    """A view of the client's descriptor that can never block the event loop,
    and that leaves the client's own file description exactly as it was."""
    return _view_of(*_prepare_view(fd, reading))


def _view_of(kind: type[RelayView], private: int) -> RelayView:
    """The view, owning `private`; closed when the view cannot be made (a
    socket.socket() that refuses the descriptor, say), never left behind."""
    try:
        return kind(private)
    except BaseException:
        os.close(private)
        raise


def _prepare_view(fd: int, reading: bool) -> tuple[type[RelayView], int]:
    """The kind of view fd needs, and a descriptor of our own for it.

    Always a copy of the client's own descriptor, never the file reopened by
    name: a reopening (/proc/self/fd/N) is an open() with the daemon's
    privilege, which may grant what the client's descriptor never carried.
    """
    info = os.fstat(fd)
    mode = info.st_mode
    if stat.S_ISCHR(mode) and os.major(info.st_rdev) == _MEM_MAJOR:
        return PlainRelayView, os.dup(fd)
    if stat.S_ISSOCK(mode):
        return SocketRelayView, os.dup(fd)
    if (stat.S_ISFIFO(mode) or (stat.S_ISCHR(mode) and os.isatty(fd))) and (
        fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK
    ):
        # Already non-blocking on the client's side: use it as it is.
        return RelayView, os.dup(fd)
    # A blocking pipe or terminal cannot be made non-blocking without
    # changing the client's file description, so it gets blocking calls in a
    # thread (started only once epoll says the call is ready). Regular files
    # too: one on a network or FUSE file system blocks for as long as its
    # server likes, and the client may be that server.
    return ThreadedRelayView, os.dup(fd)


async def open_relay_view_off_loop(fd: int, reading: bool) -> RelayView:
    """open_relay_view, with the descriptor's inspection (fstat may wait on a file
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
