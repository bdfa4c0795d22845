"""A MessageChannel over any byte stream: descriptors become pumped logical streams.

The side that sends descriptors (a client) opens one stream per descriptor
and pumps its own descriptors: it reads those it delegates for input (stdin)
and writes into those it delegates for output (stdout, stderr) whatever
arrives. The side that receives them (a daemon) gets one end of a fresh
socket pair per stream, as if it had come over SCM_RIGHTS, and pumps the
other end the opposite way.

Ordering of the outcome (protocol.md, section 3): send(Exit) on the
receiving side waits until every delegated output has reached end of file
and its StreamClose is queued; receive() on the sending side holds an Exit
back until the output streams have closed and their bytes are written out,
or until they have been quiet for `exit_grace` seconds (for a peer that
sends Exit first). No output is lost either way. A refusal (an Error
before the Exit) ran no program, so no output can follow it: the Exit is
held back only while bytes that arrived are still being written out.
"""

from __future__ import annotations

import fcntl
import math
import os
import socket
from collections.abc import Sequence

import trio

from capsudo.proto import (
    DEFAULT_EXIT_GRACE,
    DATA_FRAME_SIZE,
    DEFAULT_MAX_FRAME_PAYLOAD,
    Direction,
    Error,
    Exit,
    Fd,
    Message,
    ProtocolError,
)

from ._channel import MessageChannel, Received, close_fds
from ._fdstream import DescriptorView, SocketView, open_view
from ._mux import DEFAULT_MAX_STREAMS, DEFAULT_PROBE_INTERVAL, DEFAULT_STREAM_BUFFER, MuxConnection, MuxStream, Role


#: A session's descriptors: stdin is read and forwarded, stdout and stderr are written into.
SESSION_DIRECTIONS = (Direction.READ, Direction.WRITE, Direction.WRITE)


def default_directions(fds: Sequence[int]) -> tuple[Direction, ...]:
    """The directions for delegating `fds` when the caller names none.

    Three descriptors are a session's stdin, stdout and stderr. Others
    follow their access mode; only an explicit READ_WRITE makes the
    multiplexer read from an O_RDWR descriptor.
    """
    if len(fds) == 3:
        return SESSION_DIRECTIONS
    directions = []
    for fd in fds:
        mode = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE
        directions.append(
            Direction.READ if mode == os.O_RDONLY else Direction.WRITE if mode == os.O_WRONLY else Direction.READ_WRITE
        )
    return tuple(directions)


class _Pump:
    """One direction of one stream, moving bytes between it and a descriptor view."""

    __slots__ = ("stream", "view", "scope", "done", "waiting", "since", "last_progress")

    def __init__(self, stream: MuxStream, view: DescriptorView) -> None:
        self.stream = stream
        self.view = view
        self.scope: trio.CancelScope | None = None
        self.done = trio.Event()
        self.waiting = False  # for the descriptor (outbound) or the peer (inbound), with nothing in hand
        now = trio.current_time()
        self.since = now
        self.last_progress = now


class MuxChannel(MessageChannel):
    """A session's channel over one multiplexed byte stream.

    `role` is "dialing" for the side that connected, "accepting" for the
    side that accepted. Descriptors passed to send() stay the caller's: the
    channel works on private views of them and never closes them, never
    changes their flags, and never reads from one it delegates for output.
    """

    def __init__(
        self,
        link: trio.abc.Stream,
        role: Role,
        *,
        max_frame_payload: int = DEFAULT_MAX_FRAME_PAYLOAD,
        stream_buffer_limit: int = DEFAULT_STREAM_BUFFER,
        max_streams: int = DEFAULT_MAX_STREAMS,
        exit_grace: float | None = DEFAULT_EXIT_GRACE,
        description: str | None = None,
        nursery: trio.Nursery | None = None,
        probe_interval: float = DEFAULT_PROBE_INTERVAL,
        own_descriptors: bool = False,
    ) -> None:
        self.description = description or f"multiplexed ({role})"
        # The descriptors sent are this process's own (a client's stdio), not
        # a peer's relayed by a proxy: see open_view.
        self.own_descriptors = own_descriptors
        self.exit_grace = exit_grace
        self.connection = MuxConnection(
            link,
            role,
            max_frame_payload=max_frame_payload,
            stream_buffer_limit=stream_buffer_limit,
            max_streams=max_streams,
            description=self.description,
            nursery=nursery,
            probe_interval=probe_interval,
        )
        self._sources: list[_Pump] = []  # read our caller's descriptors (stdin)
        self._sinks: list[_Pump] = []  # write into our caller's descriptors (stdout, stderr)
        self._outputs: list[_Pump] = []  # forward a received descriptor's output to the peer
        self._view_users: dict[DescriptorView, int] = {}
        self._changed = trio.Event()
        self._closed = False
        self._refused = False  # an Error arrived: the daemon runs no program

    # ---- MessageChannel ------------------------------------------------------

    async def send(
        self, message: Message, fds: Sequence[int] = (), *, directions: Sequence[Direction] | None = None
    ) -> None:
        """Send one message. An Fd message turns `fds` into announced, pumped streams.

        `directions` (from our side: READ for input we forward, WRITE for
        output we write out) defaults to default_directions(fds). An Exit
        waits until the output of every descriptor we received has been
        forwarded to its end.
        """
        if isinstance(message, Fd):
            if message.count != len(fds):
                raise ValueError(f"Fd announces {message.count} descriptors but {len(fds)} were given")
            await self._delegate(list(fds), directions)
            return
        if fds:
            raise ValueError("descriptors travel only with an Fd message")
        if isinstance(message, Exit):
            await self._finish_outputs()
        await self.connection.send_message(message)

    async def receive(self) -> Received | None:
        try:
            item = await self.connection.receive()
        except (ProtocolError, trio.BrokenResourceError):
            await self._finish_sinks()
            raise
        if item is None:
            await self._finish_sinks()
            return None
        if isinstance(item, list):
            return self._adopt(item)
        if isinstance(item, Error):
            self._refused = True
        if isinstance(item, Exit):
            self._stop_sources()
            await self._finish_sinks()
        return Received(item, [])

    def limit_handshake(self, max_bytes: int | None) -> None:
        self.connection.limit_handshake(max_bytes)

    async def aclose(self) -> None:
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        try:
            await self.connection.aclose()
        finally:
            for view in list(self._view_users):
                view.close()
            self._view_users.clear()

    # ---- sending descriptors ---------------------------------------------------

    async def _delegate(self, fds: list[int], directions: Sequence[Direction] | None) -> None:
        if directions is None:
            directions = default_directions(fds)
        directions = tuple(Direction(d) for d in directions)
        if len(directions) != len(fds):
            raise ValueError(f"{len(fds)} descriptors but {len(directions)} directions")
        views: list[DescriptorView] = []
        try:
            for fd, direction in zip(fds, directions):
                views.append(
                    open_view(
                        fd,
                        read=direction in (Direction.READ, Direction.READ_WRITE),
                        write=direction in (Direction.WRITE, Direction.READ_WRITE),
                        own_descriptors=self.own_descriptors,
                    )
                )
            # The Fds frame is queued before any pump starts, so the peer
            # knows every stream before its first byte.
            streams = await self.connection.open_streams(directions)
        except BaseException:
            for view in views:
                view.close()
            raise
        for stream, view in zip(streams, views):
            self._start_pumps(stream, view, received=False)

    def _adopt(self, streams: list[MuxStream]) -> Received:
        theirs: list[int] = []
        try:
            for stream in streams:
                ours, their_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
                ours.setblocking(False)
                theirs.append(their_end.detach())
                self._start_pumps(stream, SocketView(ours, owns_socket=True), received=True)
        except BaseException:
            close_fds(theirs)
            for stream in streams:
                stream.close_nowait()
            raise
        return Received(Fd(len(streams)), theirs)

    def _start_pumps(self, stream: MuxStream, view: DescriptorView, *, received: bool) -> None:
        users = int(stream.can_send) + int(stream.can_receive)
        self._view_users[view] = users
        if stream.can_send:
            pump = _Pump(stream, view)
            (self._outputs if received else self._sources).append(pump)
            pump.scope = self.connection.start_task(
                self._pump_out, pump, name=f"mux pump: descriptor to stream {stream.stream_id}"
            )
        if stream.can_receive:
            pump = _Pump(stream, view)
            if not received:
                self._sinks.append(pump)
            pump.scope = self.connection.start_task(
                self._pump_in, pump, name=f"mux pump: stream {stream.stream_id} to descriptor"
            )

    # ---- pumps ---------------------------------------------------------------

    async def _pump_out(self, pump: _Pump) -> None:
        """Descriptor to stream: read only what the link can take right now."""
        stream, view = pump.stream, pump.view
        try:
            while True:
                if view.nonblocking:
                    sent = await stream.send_some_from(view.read_nowait)
                    if sent is None:
                        self._set_waiting(pump, True)
                        await view.wait_readable()
                        self._set_waiting(pump, False)
                        continue
                else:
                    await stream.wait_send_all_might_not_block()
                    self._set_waiting(pump, True)
                    data = await view.read(DATA_FRAME_SIZE)
                    self._set_waiting(pump, False)
                    if data:
                        await stream.send_all(data)
                    sent = len(data)
                if sent == 0:
                    stream.send_eof_nowait()
                    return
                self._progress(pump)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            # Nobody takes these bytes any more: writers on the other end get EPIPE.
            view.end_reading()
        except OSError:
            # A read error (EIO from a terminal that hung up) ends this input.
            stream.send_eof_nowait()
        finally:
            self._pump_done(pump)

    async def _pump_in(self, pump: _Pump) -> None:
        """Stream to descriptor: write everything that arrives, waiting as long as it takes."""
        stream, view = pump.stream, pump.view
        try:
            while True:
                self._set_waiting(pump, stream.buffered == 0)
                data = await stream.receive_some(DATA_FRAME_SIZE)
                self._set_waiting(pump, False)
                if not data:
                    view.end_writing()
                    return
                await view.write_all(data)
                self._progress(pump)
        except trio.BrokenResourceError:
            view.end_writing()  # the link is gone: the reader sees the end of its input
        except trio.ClosedResourceError:
            pass
        except OSError:
            # The descriptor's reader went away (EPIPE) or it failed: tell the
            # peer to stop sending instead of discarding its bytes forever.
            stream.close_nowait()
        finally:
            self._pump_done(pump)

    def _set_waiting(self, pump: _Pump, waiting: bool) -> None:
        if waiting and not pump.waiting:
            pump.since = trio.current_time()
        pump.waiting = waiting
        self._signal()

    def _progress(self, pump: _Pump) -> None:
        pump.last_progress = trio.current_time()
        self._signal()

    def _pump_done(self, pump: _Pump) -> None:
        pump.done.set()
        users = self._view_users.get(pump.view)
        if users is not None:
            if users <= 1:
                del self._view_users[pump.view]
                pump.view.close()
            else:
                self._view_users[pump.view] = users - 1
        self._signal()

    def _signal(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _wait_change(self, timeout: float) -> None:
        changed = self._changed
        with trio.move_on_after(timeout):
            await changed.wait()

    # ---- the outcome -----------------------------------------------------------

    def _stop_sources(self) -> None:
        # The session is over: not one more byte of the caller's input is read.
        for pump in self._sources:
            if pump.scope is not None:
                pump.scope.cancel()

    async def _finish_sinks(self) -> None:
        """Until our output descriptors have everything, or the peer has been quiet for the grace."""
        start = trio.current_time()
        while True:
            pending = [p for p in self._sinks if not p.done.is_set()]
            if not pending:
                return
            if self._refused and all(p.waiting and p.stream.buffered == 0 for p in pending):
                return  # nothing more can come: no program holds these streams
            timeout = math.inf
            if self.exit_grace is not None and all(p.waiting and p.stream.buffered == 0 for p in pending):
                quiet_since = max([start] + [max(p.since, p.last_progress) for p in pending])
                timeout = quiet_since + self.exit_grace - trio.current_time()
                if timeout <= 0:
                    return
            await self._wait_change(timeout)

    async def _finish_outputs(self) -> None:
        """Until every received descriptor's output has reached end of file and its StreamClose is queued.

        An output that stays quiet for the grace while a stray process
        (a background grandchild) keeps it open is closed, so the session
        can end.
        """
        start = trio.current_time()
        while True:
            pending = [p for p in self._outputs if not p.done.is_set()]
            if not pending:
                return
            timeout = math.inf
            if self.exit_grace is not None:
                now = trio.current_time()
                for pump in pending:
                    if not pump.waiting:
                        continue
                    remaining = max(start, pump.since, pump.last_progress) + self.exit_grace - now
                    if remaining <= 0:
                        self._abandon(pump)
                    else:
                        timeout = min(timeout, remaining)
                if all(p.done.is_set() for p in pending):
                    return
            await self._wait_change(timeout)

    def _abandon(self, pump: _Pump) -> None:
        if pump.scope is not None:
            pump.scope.cancel()
        pump.stream.send_eof_nowait()
        pump.view.end_reading()
        pump.done.set()
