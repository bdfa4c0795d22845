"""Every message and frame survives encode + decode, however the bytes are cut."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capsudo.proto import ControlDecoder, FrameDecoder, encode_frame, encode_message
from proto_strategies import FRAME_STRATEGIES, MESSAGE_STRATEGIES, frames, messages

SETTINGS = settings(max_examples=150, deadline=None)


def decode_messages_whole(wire: bytes) -> list:
    decoder = ControlDecoder()
    decoder.feed(wire)
    out = list(decoder.messages())
    assert decoder.at_boundary
    return out


def decode_messages_bytewise(wire: bytes) -> list:
    decoder = ControlDecoder()
    out = []
    for i in range(len(wire)):
        decoder.feed(wire[i : i + 1])
        out.extend(decoder.messages())
    assert decoder.at_boundary
    return out


def decode_frames_whole(wire: bytes) -> list:
    decoder = FrameDecoder()
    decoder.feed(wire)
    out = list(decoder.frames())
    assert decoder.at_boundary
    return out


def decode_frames_bytewise(wire: bytes) -> list:
    decoder = FrameDecoder()
    out = []
    for i in range(len(wire)):
        decoder.feed(wire[i : i + 1])
        out.extend(decoder.frames())
    assert decoder.at_boundary
    return out


@pytest.mark.parametrize("name", sorted(MESSAGE_STRATEGIES))
@SETTINGS
@given(data=st.data())
def test_each_message_type_round_trips(name, data):
    message = data.draw(MESSAGE_STRATEGIES[name])
    wire = encode_message(message)
    assert decode_messages_whole(wire) == [message]
    assert decode_messages_bytewise(wire) == [message]


@SETTINGS
@given(st.lists(messages, max_size=12))
def test_message_sequences_round_trip(sequence):
    wire = b"".join(encode_message(m) for m in sequence)
    assert decode_messages_whole(wire) == sequence
    assert decode_messages_bytewise(wire) == sequence


@SETTINGS
@given(st.lists(messages, max_size=12), st.data())
def test_message_sequences_round_trip_in_arbitrary_chunks(sequence, data):
    wire = b"".join(encode_message(m) for m in sequence)
    cuts = sorted(data.draw(st.sets(st.integers(0, len(wire)), max_size=10)))
    decoder = ControlDecoder()
    out = []
    start = 0
    for cut in [*cuts, len(wire)]:
        decoder.feed(wire[start:cut])
        out.extend(decoder.messages())
        start = cut
    assert out == sequence


@pytest.mark.parametrize("name", sorted(FRAME_STRATEGIES))
@SETTINGS
@given(data=st.data())
def test_each_frame_kind_round_trips(name, data):
    frame = data.draw(FRAME_STRATEGIES[name])
    wire = encode_frame(frame)
    assert decode_frames_whole(wire) == [frame]
    assert decode_frames_bytewise(wire) == [frame]


@SETTINGS
@given(st.lists(frames, max_size=10))
def test_frame_sequences_round_trip(sequence):
    wire = b"".join(encode_frame(f) for f in sequence)
    assert decode_frames_whole(wire) == sequence
    assert decode_frames_bytewise(wire) == sequence


@SETTINGS
@given(st.lists(messages, min_size=1, max_size=12))
def test_reading_needed_bytes_never_crosses_a_message_boundary(sequence):
    encoded = [encode_message(m) for m in sequence]
    wire = b"".join(encoded)
    boundaries = []
    total = 0
    for chunk in encoded:
        total += len(chunk)
        boundaries.append(total)

    decoder = ControlDecoder()
    position = 0
    out = []
    while position < len(wire):
        wanted = decoder.needed()
        if wanted == 0:
            out.append(decoder.next_message())
            # A message completes exactly at a boundary, never past it.
            assert position == boundaries[len(out) - 1]
            continue
        next_boundary = boundaries[len(out)]
        assert position + wanted <= next_boundary
        decoder.feed(wire[position : position + wanted])
        position += wanted
    # Trailing zero-length payloads (End) complete without more bytes.
    while decoder.needed() == 0:
        out.append(decoder.next_message())
        assert position == boundaries[len(out) - 1]
    assert out == sequence
    assert decoder.at_boundary
    assert decoder.needed() == 8


def test_needed_counts_header_then_payload():
    decoder = ControlDecoder()
    assert decoder.needed() == 8
    decoder.feed(bytes.fromhex("01000000"))
    assert decoder.needed() == 4
    decoder.feed(bytes.fromhex("05000000"))
    assert decoder.needed() == 5
    decoder.feed(b"he")
    assert decoder.needed() == 3
    assert decoder.next_message() is None
    decoder.feed(b"llo")
    assert decoder.needed() == 0
    assert decoder.next_message().value == "hello"
    assert decoder.needed() == 8
