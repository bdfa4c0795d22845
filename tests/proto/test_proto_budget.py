"""The budget before End: every message counts, and a header that does not fit is refused unread."""

from __future__ import annotations

import struct

import pytest

from capsudo.proto import (DATA_FRAME_SIZE, Arg, ControlDecoder, ControlFrame, End, FrameDecoder,
                           HandshakeBudget, ProtocolError, Secret, StreamData, encode_frame, encode_message)

SECRET, CONTROL, STREAM_DATA = 7, 1, 3


def test_a_secret_counts_and_a_header_past_the_rest_is_refused_before_its_payload():
    budget = HandshakeBudget(100)
    decoder = ControlDecoder(budget=budget)
    decoder.feed(encode_message(Secret(b"s" * 60)))
    assert decoder.next_message() == Secret(b"s" * 60)
    assert budget.used == 60
    # Only the header is fed: the refusal comes before any payload exists.
    decoder = ControlDecoder(budget=budget)
    decoder.feed(struct.pack("<II", SECRET, 41))
    with pytest.raises(ProtocolError, match="Secret message announces 41 bytes, more than the 40 left of the 100"):
        decoder.needed()


def test_end_lifts_the_budget():
    budget = HandshakeBudget(10)
    decoder = ControlDecoder(budget=budget)
    decoder.feed(encode_message(Arg("0123456789")) + encode_message(End()) + encode_message(Arg("x" * 1000)))
    assert [type(m) for m in decoder.messages()] == [Arg, End, Arg]


def test_a_control_frame_past_the_budget_is_refused_from_its_header():
    decoder = FrameDecoder()
    decoder.limit_handshake(1000)
    decoder.feed(struct.pack("<BII", CONTROL, 0, 16 * 1024 * 1024 + 8))
    with pytest.raises(ProtocolError, match="announces 16777216 bytes, more than the 1000 left"):
        decoder.next_frame()


def test_a_frame_decoded_before_the_cap_was_set_is_counted_and_a_pending_one_rechecked():
    decoder = FrameDecoder()
    decoder.feed(encode_frame(ControlFrame(Secret(b"s" * 600))) + struct.pack("<BII", CONTROL, 0, 508))
    assert decoder.next_frame() == ControlFrame(Secret(b"s" * 600))
    assert decoder.next_frame() is None  # its header taken, its payload awaited
    decoder.limit_handshake(1000)
    with pytest.raises(ProtocolError, match="announces 500 bytes, more than the 400 left of the 1000"):
        decoder.feed(b"\0" * 508)


def test_before_End_a_data_frame_may_be_no_larger_than_ours_and_after_it_anything_goes():
    decoder = FrameDecoder()
    decoder.limit_handshake(1000)
    decoder.feed(encode_frame(StreamData(0, b"d" * DATA_FRAME_SIZE)))
    assert decoder.next_frame() == StreamData(0, b"d" * DATA_FRAME_SIZE)
    decoder.feed(struct.pack("<BII", STREAM_DATA, 0, DATA_FRAME_SIZE + 1))
    with pytest.raises(ProtocolError, match="STREAM_DATA frame announces 262145 bytes before End"):
        decoder.next_frame()
    decoder = FrameDecoder()
    decoder.limit_handshake(1000)
    decoder.feed(encode_frame(ControlFrame(End())) + encode_frame(StreamData(0, b"d" * (DATA_FRAME_SIZE + 1)))
                 + encode_frame(ControlFrame(Arg("x" * 5000))))
    assert [type(f) for f in decoder.frames()] == [ControlFrame, StreamData, ControlFrame]
