"""Frames of the multiplexed byte channel as typed values, and their sans-I/O decoder.

The bytes of a frame header and of an Fds record, and the rules a header
must obey, are `lean`'s; this module adds the typed frames, the decoding of
the control message inside a Control frame, and the handshake budget.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Union

from . import lean
from ._budget import HandshakeBudget
from ._control import ControlDecoder
from ._errors import ProtocolError
from ._limits import DATA_FRAME_SIZE, DEFAULT_MAX_FRAME_PAYLOAD, MAX_CONTROL_PAYLOAD
from ._messages import End, Message, encode_message


CONTROL_HEADER_SIZE = lean.HEADER_SIZE
FRAME_HEADER_SIZE = lean.FRAME_HEADER_SIZE


class FrameKind(enum.IntEnum):
    CONTROL = lean.CONTROL_FRAME
    FDS = lean.FDS_FRAME
    STREAM_DATA = lean.STREAM_DATA
    STREAM_CLOSE = lean.STREAM_CLOSE


class Direction(enum.IntEnum):
    """Which way a delegated descriptor's bytes flow, seen from its sender."""

    READ = lean.READ
    WRITE = lean.WRITE
    READ_WRITE = lean.READ_WRITE


@dataclass(frozen=True, slots=True)
class ControlFrame:
    message: Message


@dataclass(frozen=True, slots=True)
class FdsFrame:
    streams: tuple[tuple[int, Direction], ...]


@dataclass(frozen=True, slots=True)
class StreamData:
    stream_id: int
    data: bytes


@dataclass(frozen=True, slots=True)
class StreamClose:
    stream_id: int


Frame = Union[ControlFrame, FdsFrame, StreamData, StreamClose]


_header = lean.frame_header


def encode_frame(frame: Frame) -> bytes:
    if isinstance(frame, StreamData):
        return _header(FrameKind.STREAM_DATA, frame.stream_id, len(frame.data)) + frame.data
    if isinstance(frame, StreamClose):
        return _header(FrameKind.STREAM_CLOSE, frame.stream_id, 0)
    if isinstance(frame, ControlFrame):
        body = encode_message(frame.message)
        return _header(FrameKind.CONTROL, 0, len(body)) + body
    if isinstance(frame, FdsFrame):
        return lean.fds_frame(frame.streams)
    raise TypeError(f"not a frame: {frame!r}")


def encode_data_header(stream_id: int, length: int) -> bytes:
    """The header of a StreamData frame, for writers that send the data separately."""
    return _header(FrameKind.STREAM_DATA, stream_id, length)


def _decode_control(payload: bytes) -> ControlFrame:
    decoder = ControlDecoder(MAX_CONTROL_PAYLOAD)
    decoder.feed(payload)
    message = decoder.next_message()
    if message is None or not decoder.at_boundary:
        raise ProtocolError("a Control frame must hold exactly one control message")
    return ControlFrame(message)


def _decode_fds(payload: bytes) -> FdsFrame:
    return FdsFrame(tuple((stream_id, Direction(direction)) for stream_id, direction in lean.fds_records(payload)))


class FrameDecoder:
    """Bytes in, whole frames out, with the frame length capped before buffering.

    What is fed is kept as the chunks it came in, not appended to one
    buffer: a payload is copied once, out of the chunks that hold it, and a
    chunk is dropped as soon as it has been read through.

    `budget` counts the control messages (HandshakeBudget); while it caps
    them, a Control frame must fit in what is left of it, and any other
    frame may be no larger than that or one of our data frames, so that a
    connection still in its handshake buffers no more than its budget
    allows whatever kind of frame it sends.
    """

    def __init__(self, max_payload: int = DEFAULT_MAX_FRAME_PAYLOAD, budget: HandshakeBudget | None = None) -> None:
        self.max_payload = max_payload
        self.budget = budget if budget is not None else HandshakeBudget()
        self._chunks: deque[memoryview] = deque()
        self._buffered = 0
        self._pending: tuple[FrameKind, int, int] | None = None
        self._broken: ProtocolError | None = None

    def feed(self, data: bytes) -> None:
        if self._broken is not None:
            raise self._broken
        if data:
            # A caller's bytearray may change after the call: only bytes are kept as they are.
            self._chunks.append(memoryview(data if isinstance(data, bytes) else bytes(data)))
            self._buffered += len(data)

    def next_frame(self) -> Frame | None:
        if self._broken is not None:
            raise self._broken
        try:
            return self._next_frame()
        except ProtocolError as exc:
            self._broken = exc
            raise

    def frames(self) -> Iterator[Frame]:
        while (frame := self.next_frame()) is not None:
            yield frame

    @property
    def at_boundary(self) -> bool:
        return self._pending is None and not self._buffered

    def _take(self, size: int) -> bytes:
        """The next `size` bytes (all buffered), copied once."""
        self._buffered -= size
        first = self._chunks[0]
        if len(first) > size:
            self._chunks[0] = first[size:]
            return bytes(first[:size])
        if len(first) == size:
            self._chunks.popleft()
            whole = first.obj  # a chunk read through from its start is taken as it came
            return whole if len(whole) == size else first.tobytes()
        pieces = []
        while size:
            chunk = self._chunks[0]
            if len(chunk) > size:
                pieces.append(chunk[:size])
                self._chunks[0] = chunk[size:]
                break
            pieces.append(chunk)
            self._chunks.popleft()
            size -= len(chunk)
        return b"".join(pieces)

    def _next_frame(self) -> Frame | None:
        if self._pending is None:
            if self._buffered < FRAME_HEADER_SIZE:
                return None
            kind_code, stream_id, length = lean.parse_frame_header(self._take(FRAME_HEADER_SIZE), self.max_payload)
            kind = FrameKind(kind_code)
            self._check_budget(kind, length)
            self._pending = (kind, stream_id, length)
        kind, stream_id, length = self._pending
        if self._buffered < length:
            return None
        payload = self._take(length) if length else b""
        self._pending = None
        if kind is FrameKind.STREAM_DATA:
            return StreamData(stream_id, payload)
        if kind is FrameKind.STREAM_CLOSE:
            return StreamClose(stream_id)
        if kind is FrameKind.CONTROL:
            frame = _decode_control(payload)
            self.budget.charge(length - CONTROL_HEADER_SIZE, is_end=isinstance(frame.message, End))
            return frame
        return _decode_fds(payload)

    def _check_budget(self, kind: FrameKind, length: int) -> None:
        left = self.budget.left
        if left is None:
            return
        if kind is FrameKind.CONTROL:
            self.budget.check("a control message", max(length - CONTROL_HEADER_SIZE, 0))
        elif length > max(left, DATA_FRAME_SIZE):
            raise ProtocolError(
                f"{kind.name} frame announces {length} bytes before End, more than the "
                f"{max(left, DATA_FRAME_SIZE)} allowed then"
            )

    def limit_handshake(self, limit: int | None) -> None:
        """Cap the control bytes before End at `limit` (see HandshakeBudget.set_limit).

        A frame whose header was read already is checked now; an excess
        breaks the decoder, and the next call to next_frame() raises it.
        """
        self.budget.set_limit(limit)
        try:
            if self._pending is not None:
                self._check_budget(self._pending[0], self._pending[2])
        except ProtocolError as exc:
            self._broken = exc
