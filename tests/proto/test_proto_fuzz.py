"""Untrusted bytes can only ever produce messages, frames or ProtocolError."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from capsudo.proto import (ControlDecoder, ControlFrame, FdsFrame, FrameDecoder, ProtocolError,
                           StreamClose, StreamData, encode_frame, encode_message)
from capsudo.proto._messages import MESSAGE_CLASSES
from proto_strategies import frames, messages

SETTINGS = settings(max_examples=300, deadline=None)
MESSAGE_TYPES = tuple(MESSAGE_CLASSES.values())
FRAME_TYPES = (ControlFrame, FdsFrame, StreamData, StreamClose)

# Plausible headers with small lengths reach the payload checks far more
# often than uniformly random bytes would.
_type_codes = st.one_of(st.sampled_from(sorted(MESSAGE_CLASSES)), st.integers(0, 2**32 - 1))
_payloads = st.one_of(
    st.binary(max_size=12),
    # Small numbers in the fixed-size layouts: near the edges of the enums.
    st.integers(0, 12).map(lambda n: struct.pack("<I", n)),
    st.tuples(*[st.integers(0, 3)] * 4).map(lambda t: struct.pack("<4H", *t)),
)
_message_like = st.builds(
    lambda t, payload: struct.pack("<II", t, len(payload)) + payload, _type_codes, _payloads
)
_frame_like = st.builds(
    lambda k, sid, payload: struct.pack("<BII", k, sid, len(payload)) + payload,
    st.integers(0, 6),
    st.one_of(st.just(0), st.integers(0, 2**32 - 1)),
    st.one_of(st.binary(max_size=20), _message_like),
)


def _mutated(valid: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """Valid encodings with bytes flipped, cut or inserted."""

    @st.composite
    def build(draw):
        data = bytearray(draw(valid))
        for _ in range(draw(st.integers(0, 3))):
            op = draw(st.sampled_from(["flip", "cut", "insert"]))
            position = draw(st.integers(0, len(data)))
            if op == "flip" and position < len(data):
                data[position] = draw(st.integers(0, 255))
            elif op == "cut":
                del data[position:]
            else:
                data[position:position] = draw(st.binary(min_size=1, max_size=4))
        return bytes(data)

    return build()


control_input = st.one_of(
    st.binary(max_size=200),
    st.lists(_message_like, max_size=6).map(b"".join),
    _mutated(st.lists(messages, max_size=6).map(lambda ms: b"".join(encode_message(m) for m in ms))),
)
frame_input = st.one_of(
    st.binary(max_size=200),
    st.lists(_frame_like, max_size=6).map(b"".join),
    _mutated(st.lists(frames, max_size=6).map(lambda fs: b"".join(encode_frame(f) for f in fs))),
)


def _drain_control(decoder: ControlDecoder, out: list) -> None:
    decoder.needed()
    for message in decoder.messages():
        assert isinstance(message, MESSAGE_TYPES)
        out.append(message)


def _drain_frames(decoder: FrameDecoder, out: list) -> None:
    for frame in decoder.frames():
        assert isinstance(frame, FRAME_TYPES)
        out.append(frame)


def _control_outcome(chunks: list[bytes]):
    decoder = ControlDecoder()
    out: list = []
    try:
        for chunk in chunks:
            decoder.feed(chunk)
            _drain_control(decoder, out)
    except ProtocolError:
        return out, True
    return out, False


def _frame_outcome(chunks: list[bytes]):
    decoder = FrameDecoder()
    out: list = []
    try:
        for chunk in chunks:
            decoder.feed(chunk)
            _drain_frames(decoder, out)
    except ProtocolError:
        return out, True
    return out, False


@SETTINGS
@given(control_input)
def test_control_decoder_raises_only_protocol_error(data):
    whole = _control_outcome([data])
    bytewise = _control_outcome([data[i : i + 1] for i in range(len(data))])
    # However the bytes are cut, the verdict is the same.
    assert whole == bytewise


@SETTINGS
@given(frame_input)
def test_frame_decoder_raises_only_protocol_error(data):
    whole = _frame_outcome([data])
    bytewise = _frame_outcome([data[i : i + 1] for i in range(len(data))])
    assert whole == bytewise


@SETTINGS
@given(st.binary(min_size=8, max_size=8), st.binary(max_size=16))
def test_control_decoder_verdict_on_any_header_comes_with_the_header(header, rest):
    """A header is accepted or refused once its 8th byte arrives, whatever follows."""
    decoder = ControlDecoder()
    decoder.feed(header[:7])
    assert decoder.next_message() is None
    decoder.feed(header[7:])
    try:
        remaining = decoder.needed()
    except ProtocolError:
        return
    type_code, length = struct.unpack("<II", header)
    assert remaining == length
    assert type_code in MESSAGE_CLASSES
