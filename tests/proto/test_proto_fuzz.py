"""Untrusted bytes can only ever produce messages, frames or ProtocolError.

Fed whole, byte by byte or cut anywhere, with the same verdict; a length
field costs memory only as the bytes it announces arrive; and the inputs the
coverage-guided fuzzer kept (fuzz/corpus/) still pass its checks.
"""

from __future__ import annotations

import struct
import sys
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capsudo.proto import (DEFAULT_MAX_FRAME_PAYLOAD, MAX_CONTROL_PAYLOAD, ControlDecoder, ControlFrame,
                           FdsFrame, FrameDecoder, FrameKind, ProtocolError, StreamClose, StreamData,
                           encode_frame, encode_message)
from capsudo.proto._messages import MESSAGE_CLASSES
from proto_strategies import frames, messages

FUZZ_DIR = Path(__file__).resolve().parents[2] / "fuzz"
sys.path.insert(0, str(FUZZ_DIR))
from fuzz_properties import TARGETS  # noqa: E402

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


def _cut(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:])]


@SETTINGS
@given(control_input, st.lists(st.integers(0, 200), max_size=8))
def test_control_verdict_does_not_depend_on_where_reads_end(data, cuts):
    assert _control_outcome(_cut(data, cuts)) == _control_outcome([data])


@SETTINGS
@given(frame_input, st.lists(st.integers(0, 200), max_size=8))
def test_frame_verdict_does_not_depend_on_where_reads_end(data, cuts):
    assert _frame_outcome(_cut(data, cuts)) == _frame_outcome([data])


# -- what a length field may cost ------------------------------------------

def _peak_while(feed) -> int:
    tracemalloc.start()
    try:
        feed()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(sorted(MESSAGE_CLASSES)), st.integers(64 * 1024, MAX_CONTROL_PAYLOAD),
       st.integers(1, 64))
def test_control_decoder_memory_follows_the_bytes_not_the_header(type_code, announced, chunks):
    """Up to the limit, a header buys a peer nothing: the buffer grows with
    what it actually sent."""
    decoder = ControlDecoder()
    sent = chunks * 512

    def feed():
        decoder.feed(struct.pack("<II", type_code, announced))
        for _ in range(chunks):
            decoder.feed(b"a" * 512)
            assert decoder.next_message() is None

    peak = _peak_while(feed)
    assert decoder.needed() == announced - sent
    assert peak < 4 * sent + 64 * 1024, f"peak {peak} for {sent} bytes sent, {announced} announced"


@settings(max_examples=30, deadline=None)
@given(st.sampled_from([kind.value for kind in FrameKind if kind is not FrameKind.STREAM_CLOSE]),
       st.integers(64 * 1024, DEFAULT_MAX_FRAME_PAYLOAD), st.integers(1, 64))
def test_frame_decoder_memory_follows_the_bytes_not_the_header(kind, announced, chunks):
    decoder = FrameDecoder()
    sent = chunks * 512

    def feed():
        decoder.feed(struct.pack("<BII", kind, 0, announced))
        for _ in range(chunks):
            decoder.feed(b"a" * 512)
            assert decoder.next_frame() is None

    peak = _peak_while(feed)
    assert not decoder.at_boundary
    assert peak < 4 * sent + 64 * 1024, f"peak {peak} for {sent} bytes sent, {announced} announced"


@SETTINGS
@given(st.sampled_from(sorted(MESSAGE_CLASSES)), st.integers(MAX_CONTROL_PAYLOAD + 1, 2**32 - 1))
def test_control_length_past_the_limit_is_refused_by_the_header_alone(type_code, announced):
    decoder = ControlDecoder()
    decoder.feed(struct.pack("<II", type_code, announced))
    with pytest.raises(ProtocolError, match="more than the limit"):
        decoder.next_message()
    # Broken for good: nothing after a lost framing is trusted.
    with pytest.raises(ProtocolError):
        decoder.feed(b"more")


@SETTINGS
@given(st.sampled_from([kind.value for kind in FrameKind]),
       st.integers(DEFAULT_MAX_FRAME_PAYLOAD + 1, 2**32 - 1))
def test_frame_length_past_the_limit_is_refused_by_the_header_alone(kind, announced):
    decoder = FrameDecoder()
    decoder.feed(struct.pack("<BII", kind, 0, announced))
    with pytest.raises(ProtocolError, match="more than the limit"):
        decoder.next_frame()


# -- the fuzz corpus -------------------------------------------------------

def _corpus(target: str) -> list[Path]:
    return sorted((FUZZ_DIR / "corpus" / target).iterdir())


@pytest.mark.parametrize("target", ["control", "frames"])
def test_kept_fuzz_corpus_replays_clean(target):
    """Every input the fuzzer kept still meets its target's properties."""
    inputs = _corpus(target)
    assert inputs, f"fuzz/corpus/{target} is empty"
    for path in inputs:
        TARGETS[target](path.read_bytes())
