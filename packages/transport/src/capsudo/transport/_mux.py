"""Logical streams and control messages over one byte stream (protocol.md, section 3).

A MuxConnection runs two tasks on its link: a reader that decodes frames and
routes them, and a writer that sends frames in the order they were committed.
Whoever sends takes a turn, waits until the writer has nothing in hand and
the link can take more, and only then produces its frame. So at most one
frame is ever held in memory on the way out, and a pump that reads someone's
terminal reads only bytes it can hand on at once.

On the way in each stream buffers at most `stream_buffer_limit` bytes (one
frame more when a peer sends frames larger than that). When a stream's
buffer is full the reader stops reading the link until the stream's consumer
catches up; the peer feels the backpressure through the link.

While the reader does not read, it cannot see the link end: a byte stream
delivers its end of file (TCP's FIN) only after the bytes before it, and a
peer that left with data still unsent behind our full window is, to our
kernel, a peer that merely sends nothing. So every `probe_interval` seconds
of such a pause the connection sends an empty StreamData, a no-op for every
peer (the reference ignores it, see protocol.md), which a live peer takes
and a departed one cannot: on TCP (and TLS) its kernel answers with a
reset, which fails our next write; on a pipe (ssh's stdio) and on vsock,
which carries a close at once, the probe's own write fails with EPIPE. The
paused reader then ends with the link's failure, as it would have on
reading it. So a departed peer is noticed within two intervals and
FAILURE_SETTLE_TIME of its leaving (2.25 s with the defaults; a killed
capsudo client on loopback TCP or TLS: 1.7 s measured), within one where
the first probe already fails (a pipe; a TCP peer that left our probes
unread, whose kernel resets at close: 0.3 to 1.3 s measured). A peer whose
host vanished answers nothing: that is noticed only when TCP gives up
retransmitting the probe.

StreamClose means "no more data from me on this stream". A side that may not
send on a stream (or has already sent its StreamClose) uses its next
StreamClose to say "I am gone, stop sending"; a reference peer ignores that
one, since it no longer knows the stream. Anything else that breaks the
contract is a ProtocolError, never a silent end of stream.
"""

from __future__ import annotations

import logging
import operator
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Literal

import trio

from capsudo.proto import (
    DEFAULT_STREAM_BUFFER,
    DATA_FRAME_SIZE,
    DEFAULT_MAX_FRAME_PAYLOAD,
    ControlFrame,
    Direction,
    Fd,
    FdsFrame,
    FrameDecoder,
    Message,
    ProtocolError,
    StreamClose,
    StreamData,
    encode_data_header,
    encode_frame,
)

from ._tls import describe_tls_failure, find_ssl_error, is_refusal_of_our_certificate

log = logging.getLogger("capsudo.transport.mux")

Role = Literal["dialing", "accepting"]

#: How many streams a peer may announce on one connection (a session needs three).
DEFAULT_MAX_STREAMS = 64
#: Control messages and stream announcements received but not yet taken by receive().
EVENT_QUEUE_SIZE = 16
#: How much the reader asks of the link at once: a whole data frame of ours.
READ_SIZE = DATA_FRAME_SIZE
#: How long a graceful close of the link (our end of file and the peer's, or a TLS close_notify) may take.
CLOSE_TIMEOUT = 1.0
#: When the writer finds the link broken, how long the reader gets to find out why.
FAILURE_SETTLE_TIME = 0.25
#: While the reader waits for room (not reading the link), how often an empty StreamData tests the link.
DEFAULT_PROBE_INTERVAL = 1.0


class _LinkLost(Exception):
    """Raised in the paused reader when the writer found the link broken."""


class _Busy:
    """Refuses a second task in the same operation, as trio's own streams do."""

    __slots__ = ("_what", "_held")

    def __init__(self, what: str) -> None:
        self._what = what
        self._held = False

    def __enter__(self) -> None:
        if self._held:
            raise trio.BusyResourceError(f"another task is already {self._what} this stream")
        self._held = True

    def __exit__(self, *exc_info) -> None:
        self._held = False


class _Outgoing:
    __slots__ = ("data", "done", "failed")

    def __init__(self, data: bytes, done: trio.Event | None = None) -> None:
        self.data = data
        self.done = done
        self.failed = False


class _TaskGroup:
    """The background tasks of one connection, cancelled together.

    They run in a nursery the caller gives, or else as trio system tasks:
    the MessageChannel contract has no nursery, and a session must not learn
    that its transport needs one. Each task handles its own errors; anything
    unexpected is logged and reported to `on_crash`, never lost.
    """

    def __init__(self, nursery: trio.Nursery | None, on_crash: Callable[[BaseException], None]) -> None:
        self._nursery = nursery
        self._on_crash = on_crash
        self._scopes: set[trio.CancelScope] = set()
        self._running = 0
        self._all_done = trio.Event()
        self._all_done.set()
        self.closed = False

    def start_soon(self, fn, *args, name: str | None = None) -> trio.CancelScope:
        if self.closed:
            raise trio.ClosedResourceError("the connection is closed")
        scope = trio.CancelScope()
        self._scopes.add(scope)
        if self._running == 0:
            self._all_done = trio.Event()
        self._running += 1
        if self._nursery is None:
            trio.lowlevel.spawn_system_task(self._run, scope, fn, args, name=name or fn)
        else:
            self._nursery.start_soon(self._run, scope, fn, args, name=name or fn)
        return scope

    async def _run(self, scope: trio.CancelScope, fn, args) -> None:
        try:
            with scope:
                await fn(*args)
        except trio.Cancelled:
            raise
        except Exception as exc:
            log.exception("multiplexer task %r failed", fn)
            self._on_crash(exc)
        finally:
            self._scopes.discard(scope)
            self._running -= 1
            if self._running == 0:
                self._all_done.set()

    async def aclose(self) -> None:
        self.closed = True
        for scope in list(self._scopes):
            scope.cancel()
        await self._all_done.wait()


class MuxConnection:
    """Both ends of the multiplexed protocol on one link, below the session's view.

    `role` partitions the stream ids: "dialing" opens 0, 2, 4…, "accepting"
    1, 3, 5…. Control messages go out with send_message() and come in,
    in order with the streams the peer announces, through receive().
    """

    def __init__(
        self,
        link: trio.abc.Stream,
        role: Role,
        *,
        max_frame_payload: int = DEFAULT_MAX_FRAME_PAYLOAD,
        stream_buffer_limit: int = DEFAULT_STREAM_BUFFER,
        max_streams: int = DEFAULT_MAX_STREAMS,
        description: str = "mux",
        nursery: trio.Nursery | None = None,
        probe_interval: float = DEFAULT_PROBE_INTERVAL,
    ) -> None:
        if role not in ("dialing", "accepting"):
            raise ValueError(f"role must be 'dialing' or 'accepting', not {role!r}")
        if stream_buffer_limit < 1:
            raise ValueError("stream_buffer_limit must be positive")
        if not probe_interval > 0:
            raise ValueError("probe_interval must be positive")
        self.link = link
        self.role: Role = role
        self.description = description
        self.stream_buffer_limit = stream_buffer_limit
        self.max_streams = max_streams
        self.probe_interval = probe_interval
        self._decoder = FrameDecoder(max_frame_payload)
        self._next_id = 0 if role == "dialing" else 1
        self._peer_parity = 1 if role == "dialing" else 0
        self._streams: dict[int, MuxStream] = {}
        self._peer_stream_count = 0
        self._closed = False
        # The writer's side.
        self._queue: deque[_Outgoing] = deque()
        self._writer_wakeup = trio.Event()
        self._writer_idle = False
        self._idle_event = trio.Event()
        self._turn = trio.Lock()
        self._send_error: BaseException | None = None
        # The reader's side.
        self._events_in, self._events_out = trio.open_memory_channel[object](EVENT_QUEUE_SIZE)
        self._receive_error: BaseException | None = None
        self._reader_done = trio.Event()
        self._pause_scope: trio.CancelScope | None = None
        # When the paused reader probes next; None while it reads the link. Counted
        # from the pause's start, so a consumer that takes a byte now and then
        # (each wakes the reader) does not put the probe off forever.
        self._next_probe: float | None = None
        self._tasks = _TaskGroup(nursery, self._crashed)
        self._tasks.start_soon(self._write_loop, name=f"mux writer ({description})")
        self._tasks.start_soon(self._read_loop, name=f"mux reader ({description})")

    # ---- the session-facing surface ----------------------------------------

    async def send_message(self, message: Message) -> None:
        """Send one control message; returns once the link has taken it."""
        if isinstance(message, Fd):
            raise ValueError("an Fd message is never sent over the multiplexer: announce streams with open_streams()")
        await self._send_frame(encode_frame(ControlFrame(message)), wait_written=True)

    async def open_streams(self, directions: Sequence[Direction | int]) -> list[MuxStream]:
        """Announce one stream per direction in a single Fds frame; data may follow at once.

        A direction is seen from our side: READ, we read a descriptor and
        send its bytes; WRITE, we write what arrives; READ_WRITE, both.
        """
        self._check_send_ok()
        streams = [MuxStream(self, self._allocate_id(), Direction(d), local=True) for d in directions]
        for stream in streams:
            self._streams[stream.stream_id] = stream
        frame = encode_frame(FdsFrame(tuple((s.stream_id, s.direction) for s in streams)))
        try:
            await self._send_frame(frame)
        except BaseException:
            for stream in streams:
                self._streams.pop(stream.stream_id, None)
            raise
        for stream in streams:
            stream.announced = True  # the Fds frame is queued: a probe may name it now
        return streams

    async def open_stream(self, direction: Direction | int = Direction.READ_WRITE) -> MuxStream:
        (stream,) = await self.open_streams([direction])
        return stream

    async def receive(self) -> Message | list[MuxStream] | None:
        """The next control message, or the streams of the next Fds frame, in arrival order.

        None when the link ended cleanly between frames; ProtocolError or
        trio.BrokenResourceError when it did not.
        """
        try:
            return await self._events_out.receive()
        except trio.EndOfChannel:
            if self._receive_error is not None:
                raise self._receive_error from None
            return None
        except trio.ClosedResourceError:
            raise trio.ClosedResourceError("the connection is closed") from None

    async def accept_streams(self) -> list[MuxStream]:
        """The streams of the next Fds frame; a control message in its place is a ProtocolError."""
        item = await self.receive()
        if item is None:
            raise trio.BrokenResourceError("the connection closed before the peer announced a stream")
        if not isinstance(item, list):
            raise ProtocolError(f"expected an Fds frame, got {type(item).__name__}")
        return item

    async def accept_stream(self) -> MuxStream:
        streams = await self.accept_streams()
        if len(streams) != 1:
            raise ProtocolError(f"expected one stream, the peer announced {len(streams)}")
        return streams[0]

    def limit_handshake(self, max_bytes: int | None) -> None:
        """Cap the control bytes the peer sends before End (MessageChannel.limit_handshake).

        The reader decodes ahead of receive(), so the cap is applied where
        frames are decoded: their headers are checked before their payloads
        are buffered.
        """
        self._decoder.limit_handshake(max_bytes)

    def start_task(self, fn, *args, name: str | None = None) -> trio.CancelScope:
        """Run `fn(*args)` beside the connection; it is cancelled when the connection closes."""
        return self._tasks.start_soon(fn, *args, name=name)

    @property
    def closed(self) -> bool:
        return self._closed

    async def aclose(self) -> None:
        """Stop every task, close every stream and the link. Safe to repeat."""
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        for stream in list(self._streams.values()):
            stream._connection_closed()
        self._events_out.close()
        try:
            await self._tasks.aclose()
            with trio.move_on_after(CLOSE_TIMEOUT):
                await self._close_link_gracefully()
        finally:
            await trio.aclose_forcefully(self.link)

    async def _close_link_gracefully(self) -> None:
        if isinstance(self.link, trio.abc.HalfCloseableStream):
            # Say we are done, then read what the peer still sends until it
            # is done too: closing with unread bytes resets the connection,
            # and the peer would meet an error where the end should be.
            try:
                await self.link.send_eof()
                while await self.link.receive_some(READ_SIZE):
                    pass
            except (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError, OSError):
                pass
        await self.link.aclose()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.aclose()

    # ---- writing ------------------------------------------------------------

    def _allocate_id(self) -> int:
        stream_id = self._next_id
        if stream_id > 0xFFFFFFFF:
            raise RuntimeError("this connection has used up its stream ids")
        self._next_id += 2
        return stream_id

    def _check_send_ok(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the connection is closed")
        if self._send_error is not None:
            raise self._send_failure()

    def _send_failure(self) -> BaseException:
        # What the receiving side found (a TLS alert, a protocol error) says
        # more than the EPIPE that followed it on the sending side.
        error = self._receive_error if self._receive_error is not None else self._send_error
        assert error is not None
        if isinstance(error, trio.BrokenResourceError):
            return error
        broken = trio.BrokenResourceError(str(error))
        broken.__cause__ = error
        return broken

    def _enqueue(self, item: _Outgoing) -> None:
        self._queue.append(item)
        if self._writer_idle:
            self._writer_idle = False
            self._idle_event = trio.Event()
        self._writer_wakeup.set()

    def _enqueue_close(self, stream_id: int) -> None:
        # A StreamClose needs no turn: it is tiny, each stream sends at most
        # two, and a stream closed under cancellation must still say so.
        if not self._closed and self._send_error is None:
            self._enqueue(_Outgoing(encode_frame(StreamClose(stream_id))))

    async def _wait_idle(self) -> None:
        """With the turn held: until the writer has nothing in hand and the link is writable."""
        while not self._writer_idle:
            self._check_send_ok()
            await self._idle_event.wait()
        self._check_send_ok()

    async def _send_frame(self, data: bytes, *, wait_written: bool = False) -> None:
        item = _Outgoing(data, trio.Event() if wait_written else None)
        async with self._turn:
            await self._wait_idle()
            self._enqueue(item)
        if item.done is not None:
            await item.done.wait()
            if item.failed:
                raise self._send_failure()

    async def _send_data_from(self, stream: MuxStream, produce: Callable[[int], bytes | None]) -> int | None:
        """Take the turn, wait for the link, then ask `produce` for the bytes to send now."""
        async with self._turn:
            await self._wait_idle()
            stream._check_can_send()
            data = produce(DATA_FRAME_SIZE)
            if data is None:
                return None
            if data:
                self._enqueue(_Outgoing(encode_data_header(stream.stream_id, len(data)) + data))
            return len(data)

    async def _write_loop(self) -> None:
        try:
            while True:
                while self._queue:
                    # Left in the queue while it is written, so that a failure marks it too.
                    item = self._queue[0]
                    await self.link.send_all(item.data)
                    self._queue.popleft()
                    if item.done is not None:
                        item.done.set()
                await self.link.wait_send_all_might_not_block()
                if self._queue:
                    continue
                self._writer_wakeup = trio.Event()
                self._writer_idle = True
                self._idle_event.set()
                await self._writer_wakeup.wait()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            await self._writer_failed(exc)

    async def _writer_failed(self, exc: BaseException) -> None:
        with trio.move_on_after(FAILURE_SETTLE_TIME):
            await self._reader_done.wait()
        self._send_error = self._link_failure(exc)
        self._idle_event.set()
        while self._queue:
            item = self._queue.popleft()
            item.failed = True
            if item.done is not None:
                item.done.set()
        for stream in list(self._streams.values()):
            stream._interrupt()
        if self._pause_scope is not None:
            self._pause_scope.cancel()  # a reader waiting for room would never read the failure

    # ---- probing the link while the reader waits ---------------------------

    async def _wait_not_reading(self, wait: Callable[[], Awaitable[object]]) -> bool:
        """One wait of the reader for something other than the link; False if it timed out.

        The caller checks its condition again either way. A timeout probes
        the link; a link the writer found broken ends the reader.
        """
        self._check_link_alive()
        if self._next_probe is None:
            self._next_probe = trio.current_time() + self.probe_interval
        with trio.CancelScope(deadline=self._next_probe) as scope:
            self._pause_scope = scope
            try:
                await wait()
            finally:
                self._pause_scope = None
        self._check_link_alive()
        if scope.cancelled_caught:
            self._probe_link()
            self._next_probe = trio.current_time() + self.probe_interval
            return False
        return True

    def _check_link_alive(self) -> None:
        if self._send_error is not None:
            raise _LinkLost

    def _probe_link(self) -> None:
        """Send an empty StreamData, if the writer is idle: a departed peer's kernel answers with a reset.

        A busy writer needs no probe: what it is sending tests the link.
        Every peer takes an empty StreamData on a stream that carries data
        towards it and is not closed yet, so one of those is used while there
        is one; else any announced stream (protocol.md: a no-op on any).
        """
        if self._closed or self._send_error is not None or not self._writer_idle:
            return
        announced = [stream for stream in self._streams.values() if stream.announced]
        carrier = next((s for s in announced if s.can_send and not s._eof_sent), None)
        if carrier is None:
            carrier = next(iter(announced), None)
        if carrier is not None:
            self._enqueue(_Outgoing(encode_data_header(carrier.stream_id, 0)))

    # ---- reading ------------------------------------------------------------

    async def _read_loop(self) -> None:
        decoder = self._decoder
        error: BaseException | None = None
        try:
            while True:
                self._next_probe = None  # reading the link: whatever ended it, we see
                data = await self.link.receive_some(READ_SIZE)
                if not data:
                    if not decoder.at_boundary:
                        raise ProtocolError("the connection closed in the middle of a frame")
                    break
                decoder.feed(data)
                while (frame := decoder.next_frame()) is not None:
                    await self._dispatch(frame)
        except ProtocolError as exc:
            error = exc
        except _LinkLost:
            error = self._send_error
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            if self._closed:
                return
            error = self._link_failure(exc)
        self._finish_reading(error)

    def _finish_reading(self, error: BaseException | None) -> None:
        self._receive_error = error
        self._reader_done.set()
        self._events_in.close()
        for stream in list(self._streams.values()):
            stream._link_ended()

    async def _deliver(self, item: object) -> None:
        try:
            while not await self._wait_not_reading(partial(self._events_in.send, item)):
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # nobody will receive any more: the connection is closing

    async def _dispatch(self, frame) -> None:
        if isinstance(frame, StreamData):
            await self._stream(frame.stream_id, "StreamData")._receive_data(frame.data)
        elif isinstance(frame, StreamClose):
            self._stream(frame.stream_id, "StreamClose")._receive_close()
        elif isinstance(frame, ControlFrame):
            if isinstance(frame.message, Fd):
                raise ProtocolError("an Fd control message cannot cross the multiplexer; descriptors are announced with an Fds frame")
            await self._deliver(frame.message)
        elif isinstance(frame, FdsFrame):
            await self._deliver(self._announced(frame))
        else:  # pragma: no cover - the decoder yields nothing else
            raise ProtocolError(f"unexpected frame {frame!r}")

    def _stream(self, stream_id: int, what: str) -> MuxStream:
        stream = self._streams.get(stream_id)
        if stream is None:
            raise ProtocolError(f"{what} for stream {stream_id}, which was never announced")
        return stream

    def _announced(self, frame: FdsFrame) -> list[MuxStream]:
        streams = []
        for stream_id, direction in frame.streams:
            if stream_id % 2 != self._peer_parity:
                parity = "odd" if self._peer_parity else "even"
                raise ProtocolError(f"the peer announced stream {stream_id}; its stream ids are {parity}")
            if stream_id in self._streams:
                raise ProtocolError(f"stream {stream_id} was announced twice")
            if self._peer_stream_count >= self.max_streams:
                raise ProtocolError(f"the peer announced more than {self.max_streams} streams")
            self._peer_stream_count += 1
            stream = MuxStream(self, stream_id, direction, local=False)
            self._streams[stream_id] = stream
            streams.append(stream)
        return streams

    def _receive_failure(self, stream: MuxStream) -> BaseException | None:
        """Why `stream` can get no more data, if the reader has stopped."""
        if not self._reader_done.is_set():
            return None
        error = self._receive_error
        if error is None:
            return trio.BrokenResourceError(f"the connection closed before stream {stream.stream_id} ended")
        broken = trio.BrokenResourceError(f"stream {stream.stream_id}: {error}")
        broken.__cause__ = error
        return broken

    def _link_failure(self, exc: BaseException) -> BaseException:
        if find_ssl_error(exc) is not None:
            reason = describe_tls_failure(exc, server_side=self.role == "accepting")
            prefix = "TLS handshake failed" if is_refusal_of_our_certificate(exc) else "TLS failure"
            message = f"{prefix}: {reason}"
        else:
            cause = exc.__cause__ if exc.__cause__ is not None else exc
            detail = getattr(cause, "strerror", None) or str(cause) or type(cause).__name__
            message = f"the connection ({self.description}) broke: {detail}"
        broken = trio.BrokenResourceError(message)
        broken.__cause__ = exc
        return broken

    def _crashed(self, exc: BaseException) -> None:
        if self._receive_error is None and not self._reader_done.is_set():
            self._receive_error = trio.BrokenResourceError(f"internal error in the multiplexer: {exc!r}")


class MuxStream(trio.abc.HalfCloseableStream):
    """One logical stream of a MuxConnection, as a trio half-closeable stream.

    `direction` is the one announced in the Fds frame, from the announcer's
    point of view; `can_send` and `can_receive` say what it allows on this
    side. A direction that carries no data towards us reads as end of file;
    one that carries none from us refuses send_all() as closed.
    """

    def __init__(self, connection: MuxConnection, stream_id: int, direction: Direction, *, local: bool) -> None:
        self._connection = connection
        self.stream_id = stream_id
        self.direction = direction
        self.local = local
        announcer_reads = direction in (Direction.READ, Direction.READ_WRITE)
        announcer_writes = direction in (Direction.WRITE, Direction.READ_WRITE)
        self.can_send = announcer_reads if local else announcer_writes
        self.can_receive = announcer_writes if local else announcer_reads
        self._send_busy = _Busy("sending on")
        self._receive_busy = _Busy("receiving from")
        # Arrived data as the frames brought it: handed on whole where it
        # fits, so a byte is not copied again on its way to the consumer.
        self._chunks: deque[bytes | memoryview] = deque()
        self._buffered = 0
        self._limit = connection.stream_buffer_limit
        self._data_lot = trio.lowlevel.ParkingLot()
        self._space_lot = trio.lowlevel.ParkingLot()
        self._operations: set[trio.CancelScope] = set()
        # A peer's stream is known to both sides at once; ours once its Fds frame is queued.
        self.announced = not local
        self._closed = False
        self._eof_sent = False
        self._gone_sent = False
        self._eof_received = False
        self._peer_gone = False

    def __repr__(self) -> str:
        return f"<MuxStream {self.stream_id} {self.direction.name} {'ours' if self.local else 'theirs'}>"

    @property
    def buffered(self) -> int:
        """Bytes that arrived and wait for receive_some()."""
        return self._buffered

    @property
    def peer_gone(self) -> bool:
        """The peer said it takes no more data on this stream."""
        return self._peer_gone

    # ---- sending -----------------------------------------------------------

    def _check_can_send(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("this stream is closed")
        if not self.can_send:
            raise trio.ClosedResourceError(f"stream {self.stream_id} carries no data from this side")
        if self._eof_sent:
            raise trio.ClosedResourceError("send_eof() was already called on this stream")
        if self._peer_gone:
            raise trio.BrokenResourceError(f"the peer closed stream {self.stream_id}")
        self._connection._check_send_ok()

    @contextmanager
    def _operation(self):
        """A cancel scope that close (ours) or the peer's departure can interrupt."""
        scope = trio.CancelScope()
        self._operations.add(scope)
        try:
            with scope:
                yield scope
        finally:
            self._operations.discard(scope)
        if scope.cancelled_caught:
            self._check_can_send()
            raise trio.BrokenResourceError(f"stream {self.stream_id} was interrupted")

    def _interrupt(self) -> None:
        for scope in list(self._operations):
            scope.cancel()

    async def send_all(self, data) -> None:
        with self._send_busy:
            await trio.lowlevel.checkpoint_if_cancelled()
            self._check_can_send()
            view = memoryview(data).cast("B")
            if not view:
                await trio.lowlevel.cancel_shielded_checkpoint()
                return
            with self._operation():
                for offset in range(0, len(view), DATA_FRAME_SIZE):
                    chunk = bytes(view[offset : offset + DATA_FRAME_SIZE])
                    await self._connection._send_data_from(self, lambda _size, chunk=chunk: chunk)

    async def send_some_from(self, produce: Callable[[int], bytes | None]) -> int | None:
        """Send what `produce(max_bytes)` returns, calling it only once the link can take it.

        `produce` returns bytes, b"" at its end (nothing is sent; the caller
        decides about send_eof), or None when it has nothing yet. Returns the
        number of bytes sent, or None. This is how a pump reads a terminal
        without ever holding a keystroke it cannot deliver.
        """
        with self._send_busy:
            await trio.lowlevel.checkpoint_if_cancelled()
            self._check_can_send()
            with self._operation():
                return await self._connection._send_data_from(self, produce)

    async def wait_send_all_might_not_block(self) -> None:
        with self._send_busy:
            await trio.lowlevel.checkpoint_if_cancelled()
            self._check_can_send()
            with self._operation():
                async with self._connection._turn:
                    await self._connection._wait_idle()

    async def send_eof(self) -> None:
        with self._send_busy:
            await trio.lowlevel.checkpoint_if_cancelled()
            if self._closed:
                raise trio.ClosedResourceError("this stream is closed")
            self.send_eof_nowait()
            await trio.lowlevel.cancel_shielded_checkpoint()

    def send_eof_nowait(self) -> None:
        """Queue our StreamClose now, without waiting (it follows our data already queued)."""
        if self.can_send and not self._eof_sent:
            self._eof_sent = True
            self._connection._enqueue_close(self.stream_id)

    # ---- receiving ---------------------------------------------------------

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if max_bytes is None:
            max_bytes = DATA_FRAME_SIZE
        else:
            max_bytes = operator.index(max_bytes)
            if max_bytes < 1:
                raise ValueError("max_bytes must be at least 1")
        with self._receive_busy:
            await trio.lowlevel.checkpoint_if_cancelled()
            waited = False
            while True:
                if self._closed:
                    raise trio.ClosedResourceError("this stream is closed")
                if self._chunks:
                    data = self._take(max_bytes)
                    self._space_lot.unpark_all()
                    break
                if self._eof_received or not self.can_receive:
                    data = b""
                    break
                failure = self._connection._receive_failure(self)
                if failure is not None:
                    raise failure
                await self._data_lot.park()
                waited = True
            if not waited:
                await trio.lowlevel.cancel_shielded_checkpoint()
            return data

    def _take(self, max_bytes: int) -> bytes:
        first = self._chunks[0]
        if len(first) <= max_bytes:
            self._chunks.popleft()
            data = first if isinstance(first, bytes) else bytes(first)
        else:
            view = first if isinstance(first, memoryview) else memoryview(first)
            data = bytes(view[:max_bytes])
            self._chunks[0] = view[max_bytes:]
        self._buffered -= len(data)
        return data

    # ---- closing -----------------------------------------------------------

    def close_nowait(self) -> None:
        """aclose() without the checkpoint: usable where awaiting is not."""
        if self._closed:
            return
        self._closed = True
        self.send_eof_nowait()
        if self.can_receive and not self._eof_received and not self._gone_sent:
            self._gone_sent = True
            self._connection._enqueue_close(self.stream_id)
        self._chunks.clear()
        self._buffered = 0
        self._data_lot.unpark_all()
        self._space_lot.unpark_all()
        self._interrupt()

    async def aclose(self) -> None:
        self.close_nowait()
        await trio.lowlevel.checkpoint()

    # ---- called by the connection's reader ---------------------------------

    async def _receive_data(self, data: bytes) -> None:
        if not data:
            return  # a probe of the link (or a peer's no-op): valid on any announced stream
        if not self.can_receive:
            raise ProtocolError(f"StreamData on stream {self.stream_id}, which carries no data from the peer")
        if self._eof_received:
            raise ProtocolError(f"StreamData on stream {self.stream_id} after its StreamClose")
        while not self._closed and self._buffered and self._buffered + len(data) > self._limit:
            await self._connection._wait_not_reading(self._space_lot.park)
        if self._closed:
            return  # nobody reads this stream any more
        self._chunks.append(data)
        self._buffered += len(data)
        self._data_lot.unpark_all()

    def _receive_close(self) -> None:
        if self.can_receive and not self._eof_received:
            self._eof_received = True
            self._data_lot.unpark_all()
        elif not self._peer_gone:
            self._peer_gone = True
            self._interrupt()
        else:
            raise ProtocolError(f"more StreamClose frames for stream {self.stream_id} than the protocol allows")

    def _link_ended(self) -> None:
        self._data_lot.unpark_all()
        self._space_lot.unpark_all()

    def _connection_closed(self) -> None:
        self._closed = True
        self._chunks.clear()
        self._buffered = 0
        self._data_lot.unpark_all()
        self._space_lot.unpark_all()
        self._interrupt()
