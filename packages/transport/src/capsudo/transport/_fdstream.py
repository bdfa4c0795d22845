"""Private, non-blocking access to descriptors that belong to someone else.

The multiplexer reads a client's stdin and writes its stdout and stderr from
an event loop. Those descriptors are often shared with other processes (a
terminal, a pipe inherited from a shell), and O_NONBLOCK lives on the shared
open file description: setting it would make the next program that uses the
terminal fail with EAGAIN. So each descriptor gets a view of its own:

- a FIFO or a terminal of this process's own (`own_descriptors`, as a
  client's stdio) is reopened through /proc/self/fd/N with O_NONBLOCK and
  O_NOCTTY: a new open file description on the same pipe or terminal, whose
  flags are ours alone. Never someone else's: opening by name is an open()
  with this process's privilege, and a privileged proxy relaying a client's
  descriptors would grant that client more than it holds (a terminal it
  was hung up from, say);
- a socket is used with MSG_DONTWAIT on every call, which leaves its flags
  alone;
- a regular file (and /dev/null and its kin) never blocks for long, so plain
  reads and writes do;
- anything else, or a reopen the kernel refuses, goes through a worker thread.

A view never drops data: a descriptor that is non-blocking already (EAGAIN on
a thread's write) is waited on, not given up on.

These are the channel's views, made where descriptors enter or leave a
multiplexed channel. The daemon's pty relay has views of its own (core's
_relay_views), for descriptors that are always a peer's and whose regular
files may never answer: those never reopen anything and keep even file I/O
off the event loop.
"""

from __future__ import annotations

import os
import socket
import threading

import trio

from ._private_access import PLAIN, REOPENED, SOCKET, private_access

_RETRY_PAUSE = 0.01


class DescriptorView:
    """Reads and writes on a descriptor without touching its shared flags.

    `fd` is ours (a new description or a duplicate) and `close()` closes it;
    the caller's descriptor is never closed.
    """

    #: How the view does its I/O: "reopened", "socket", "plain" or "thread".
    kind: str = "?"
    #: True when read_nowait() can tell "nothing yet" apart from blocking.
    nonblocking: bool = True

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._closed = False

    def read_nowait(self, size: int) -> bytes | None:
        """Up to `size` bytes, b"" at end of file, None when nothing is ready."""
        try:
            return os.read(self.fd, size)
        except BlockingIOError:
            return None

    def write_nowait(self, data) -> int | None:
        """How many bytes went out, None when the descriptor cannot take any now."""
        try:
            return os.write(self.fd, data)
        except BlockingIOError:
            return None

    async def wait_readable(self) -> None:
        await trio.lowlevel.wait_readable(self.fd)

    async def wait_writable(self) -> None:
        await trio.lowlevel.wait_writable(self.fd)

    async def read(self, size: int) -> bytes:
        """For views that are not `nonblocking`: a read that may wait."""
        while True:
            data = self.read_nowait(size)
            if data is not None:
                return data
            await self.wait_readable()

    async def write_all(self, data) -> None:
        view = memoryview(data)
        while view:
            sent = self.write_nowait(view)
            if sent is None:
                await self.wait_writable()
            else:
                view = view[sent:]

    def end_writing(self) -> None:
        """No more bytes will be written through this view."""

    def end_reading(self) -> None:
        """No more bytes will be read through this view."""

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        _notify_closing(self.fd)
        os.close(self.fd)

    @property
    def closed(self) -> bool:
        return self._closed


class _ReopenedView(DescriptorView):
    """A FIFO or terminal opened afresh, non-blocking on our description only."""

    kind = "reopened"


class _PlainView(DescriptorView):
    """A regular file or a memory device: I/O that never waits for a peer."""

    kind = "plain"

    def read_nowait(self, size: int) -> bytes | None:
        return os.read(self.fd, size)

    def write_nowait(self, data) -> int | None:
        return os.write(self.fd, data)


class SocketView(DescriptorView):
    """A stream socket, read and written with MSG_DONTWAIT.

    Given a socket of its own (a socketpair end the multiplexer made), it
    also half-closes it: end_writing() is shutdown(SHUT_WR), the reader's
    end of file; end_reading() is shutdown(SHUT_RD), which makes the other
    end's writes fail with EPIPE.
    """

    kind = "socket"

    def __init__(self, sock: socket.socket, *, owns_socket: bool = False) -> None:
        super().__init__(sock.fileno())
        self.socket = sock
        self._owns_socket = owns_socket

    def read_nowait(self, size: int) -> bytes | None:
        try:
            return self.socket.recv(size, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return None

    def write_nowait(self, data) -> int | None:
        try:
            return self.socket.send(data, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
        except BlockingIOError:
            return None

    def end_writing(self) -> None:
        if self._owns_socket and not self._closed:
            _shutdown(self.socket, socket.SHUT_WR)

    def end_reading(self) -> None:
        if self._owns_socket and not self._closed:
            _shutdown(self.socket, socket.SHUT_RD)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        _notify_closing(self.socket)
        self.socket.close()


def _notify_closing(fd) -> None:
    """Wake the tasks waiting on `fd` before it closes (there are none outside trio)."""
    try:
        trio.lowlevel.notify_closing(fd)
    except RuntimeError:
        pass


def _shutdown(sock: socket.socket, how: int) -> None:
    try:
        sock.shutdown(how)
    except OSError:
        pass  # already disconnected: the peer sees the end either way


class _ThreadView(DescriptorView):
    """The last resort: blocking I/O in a worker thread, on a duplicate.

    Before a read it waits, where the kernel allows, until the descriptor is
    readable, so that a session that ends meanwhile has read nothing. A
    thread still blocked when the view closes keeps the duplicate open until
    it returns, so its descriptor number is never reused under it.
    """

    kind = "thread"
    nonblocking = False

    def __init__(self, fd: int) -> None:
        super().__init__(fd)
        self._pollable = True
        self._lock = threading.Lock()
        self._in_threads = 0
        self._close_pending = False

    async def _wait(self, waiter) -> None:
        if self._pollable:
            try:
                await waiter(self.fd)
                return
            except OSError:
                self._pollable = False  # epoll refuses this kind of file
        await trio.sleep(_RETRY_PAUSE)

    def _in_thread(self, operation, *args):
        try:
            return operation(self.fd, *args)
        finally:
            with self._lock:
                self._in_threads -= 1
                close_now = self._close_pending and self._in_threads == 0
            if close_now:
                os.close(self.fd)

    async def _run(self, operation, *args):
        with self._lock:
            if self._closed:
                raise trio.ClosedResourceError("the view is closed")
            self._in_threads += 1
        return await trio.to_thread.run_sync(self._in_thread, operation, *args, abandon_on_cancel=True)

    async def read(self, size: int) -> bytes:
        while True:
            await self._wait(trio.lowlevel.wait_readable)
            try:
                return await self._run(os.read, size)
            except BlockingIOError:
                continue

    def read_nowait(self, size: int) -> bytes | None:  # pragma: no cover - callers check `nonblocking`
        raise RuntimeError("a thread view cannot read without waiting")

    async def write_all(self, data) -> None:
        view = memoryview(data)
        while view:
            try:
                sent = await self._run(os.write, bytes(view[:65536]))
            except BlockingIOError:
                # Somebody made the shared description non-blocking; wait, do not drop.
                await self._wait(trio.lowlevel.wait_writable)
                continue
            view = view[sent:]

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._in_threads:
                self._close_pending = True
                return
        if self._pollable:
            _notify_closing(self.fd)
        os.close(self.fd)


def open_view(fd: int, *, read: bool = False, write: bool = False, own_descriptors: bool = False) -> DescriptorView:
    """A private view of `fd` for reading, writing or both (see private_access)."""
    how, own_fd = private_access(fd, read=read, write=write, own_descriptors=own_descriptors)
    if how == PLAIN:
        return _PlainView(own_fd)
    if how == SOCKET:
        return SocketView(socket.socket(fileno=own_fd))
    if how == REOPENED:
        return _ReopenedView(own_fd)
    return _ThreadView(own_fd)
