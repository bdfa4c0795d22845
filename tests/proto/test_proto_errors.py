"""Bytes the contract forbids are refused with ProtocolError, each for its reason."""

from __future__ import annotations

import struct

import pytest

from capsudo.proto import (MAX_CONTROL_PAYLOAD, Arg, ControlDecoder, ControlFrame, End, Error, Exit,
                           FrameDecoder, ProtocolError, StreamData, Unauthorized, decode_header,
                           encode_frame, encode_message)


def message(type_code: int, payload: bytes = b"", length: int | None = None) -> bytes:
    return struct.pack("<II", type_code, len(payload) if length is None else length) + payload


def frame(kind: int, stream_id: int, payload: bytes = b"", length: int | None = None) -> bytes:
    return struct.pack("<BII", kind, stream_id, len(payload) if length is None else length) + payload


def decode_one(wire: bytes):
    decoder = ControlDecoder()
    decoder.feed(wire)
    return decoder.next_message()


def decode_one_frame(wire: bytes, **options):
    decoder = FrameDecoder(**options)
    decoder.feed(wire)
    return decoder.next_frame()


# --- control messages -------------------------------------------------------

@pytest.mark.parametrize("type_code", [0, 10, 11, 100, 254, 256, 0x01000001, 2**32 - 1])
def test_unknown_type_is_refused(type_code):
    with pytest.raises(ProtocolError, match="unknown message type"):
        decode_one(message(type_code))
    with pytest.raises(ProtocolError):
        decode_header(message(type_code))


def test_length_over_16_mib_is_refused_but_16_mib_is_not():
    with pytest.raises(ProtocolError, match="limit"):
        decode_one(message(7, length=MAX_CONTROL_PAYLOAD + 1))
    decoder = ControlDecoder()
    decoder.feed(message(7, length=MAX_CONTROL_PAYLOAD))
    assert decoder.needed() == MAX_CONTROL_PAYLOAD
    assert decoder.next_message() is None


def test_decoder_limit_is_a_constructor_argument():
    decoder = ControlDecoder(max_payload=4)
    decoder.feed(encode_message(Arg("abcd")))
    assert decoder.next_message() == Arg("abcd")
    decoder.feed(encode_message(Arg("abcde")))
    with pytest.raises(ProtocolError):
        decoder.next_message()


@pytest.mark.parametrize("decoder_factory", [ControlDecoder, FrameDecoder])
def test_u32_max_length_is_refused_as_soon_as_the_header_is_complete(decoder_factory):
    if decoder_factory is ControlDecoder:
        header = message(1, length=2**32 - 1)
        poll = "next_message"
    else:
        header = frame(3, 1, length=2**32 - 1)
        poll = "next_frame"
    decoder = decoder_factory()
    decoder.feed(header[:-1])
    assert getattr(decoder, poll)() is None  # not yet complete: no verdict
    decoder.feed(header[-1:])
    with pytest.raises(ProtocolError):
        getattr(decoder, poll)()
    # Broken for good: nothing after the error can be trusted or buffered.
    with pytest.raises(ProtocolError):
        decoder.feed(b"x" * 100)
    with pytest.raises(ProtocolError):
        getattr(decoder, poll)()


def test_needed_refuses_a_huge_header_instead_of_asking_for_4_gib():
    decoder = ControlDecoder()
    decoder.feed(message(2, length=2**32 - 1))
    with pytest.raises(ProtocolError):
        decoder.needed()


@pytest.mark.parametrize("decoder_factory, wire", [
    (ControlDecoder, message(7, length=MAX_CONTROL_PAYLOAD)),
    (FrameDecoder, frame(3, 1, length=MAX_CONTROL_PAYLOAD)),
])
def test_an_accepted_large_length_is_not_allocated_up_front(decoder_factory, wire):
    import tracemalloc

    decoder = decoder_factory()
    tracemalloc.start()
    try:
        decoder.feed(wire)
        for _ in range(100):
            decoder.feed(b"0123456789")
            if decoder_factory is ControlDecoder:
                assert decoder.next_message() is None
                decoder.needed()
            else:
                assert decoder.next_frame() is None
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # 16 MiB announced, about 1 KiB fed: memory follows what was fed.
    assert peak < 256 * 1024


@pytest.mark.parametrize("payload", [b"", b"\x01", b"\x01\x00", b"\x01\x00\x00", b"\x01\x00\x00\x00\x00"])
def test_exit_payload_must_be_exactly_4_bytes(payload):
    with pytest.raises(ProtocolError, match="Exit"):
        decode_one(message(3, payload))


@pytest.mark.parametrize("type_code, size", [(4, 4), (5, 4), (9, 8)])
def test_fixed_size_payloads_refuse_other_sizes(type_code, size):
    for wrong in (size - 1, size + 1, 0):
        with pytest.raises(ProtocolError):
            decode_one(message(type_code, b"\0" * wrong))


@pytest.mark.parametrize("kind", [0, 4, 7, 2**32 - 1])
def test_unknown_session_type_is_refused(kind):
    with pytest.raises(ProtocolError, match="session type"):
        decode_one(message(5, struct.pack("<I", kind)))


@pytest.mark.parametrize("type_code", [1, 2])
@pytest.mark.parametrize("payload", [b"\xff", b"A=\xc3", b"A=\xed\xa0\x80", b"\xc0\xaf=x"])
def test_invalid_utf8_in_arg_or_env_is_refused(type_code, payload):
    with pytest.raises(ProtocolError, match="UTF-8"):
        decode_one(message(type_code, payload))


@pytest.mark.parametrize("type_code, payload", [
    (1, b"ls\0-la"),
    (1, b"\0"),
    (1, b"ls\0"),
    (2, b"A=b\0c"),
    (2, b"A\0=b"),
])
def test_nul_inside_arg_or_env_is_refused(type_code, payload):
    with pytest.raises(ProtocolError, match="NUL"):
        decode_one(message(type_code, payload))


@pytest.mark.parametrize("payload", [b"", b"PATH", b"=value", b"=", b"no_equals_here"])
def test_env_must_have_key_equals_value(payload):
    with pytest.raises(ProtocolError, match="KEY=VALUE"):
        decode_one(message(2, payload))


def test_end_with_payload_is_refused():
    with pytest.raises(ProtocolError, match="End"):
        decode_one(message(255, b"\0"))


def test_error_and_unauthorized_text_is_shown_not_refused():
    # Human-readable text: undecodable bytes are replaced, the message kept.
    assert decode_one(message(6, b"bad \xff")) == Error("bad \ufffd")
    assert decode_one(message(8, b"pw\xff: ")) == Unauthorized("pw\ufffd: ")


def test_control_decoder_stays_broken_after_an_error():
    decoder = ControlDecoder()
    decoder.feed(message(1, b"\xff") + encode_message(End()))
    with pytest.raises(ProtocolError):
        decoder.next_message()
    with pytest.raises(ProtocolError):
        decoder.next_message()
    with pytest.raises(ProtocolError):
        decoder.needed()
    with pytest.raises(ProtocolError):
        decoder.feed(encode_message(End()))


# --- frames ------------------------------------------------------------------

@pytest.mark.parametrize("kind", [0, 5, 6, 255])
def test_unknown_frame_kind_is_refused(kind):
    with pytest.raises(ProtocolError, match="kind"):
        decode_one_frame(frame(kind, 0))


@pytest.mark.parametrize("direction", [3, 4, 255])
def test_fds_frame_with_unknown_direction_is_refused(direction):
    payload = struct.pack("<IB", 0, 0) + struct.pack("<IB", 1, direction)
    with pytest.raises(ProtocolError, match="direction"):
        decode_one_frame(frame(2, 0, payload))


@pytest.mark.parametrize("length", [1, 4, 6, 9, 11])
def test_fds_frame_length_must_be_a_multiple_of_5(length):
    with pytest.raises(ProtocolError, match="multiple of 5"):
        decode_one_frame(frame(2, 0, b"\0" * length))


def test_control_frame_holding_two_messages_is_refused():
    payload = encode_message(Arg("a")) + encode_message(End())
    with pytest.raises(ProtocolError, match="exactly one"):
        decode_one_frame(frame(1, 0, payload))


@pytest.mark.parametrize("payload", [
    b"",
    encode_message(Arg("abc"))[:-1],  # payload cut short
    encode_message(Arg("abc"))[:5],  # header cut short
    encode_message(Exit(0)) + b"\0",  # one trailing byte
])
def test_control_frame_holding_a_truncated_or_padded_message_is_refused(payload):
    with pytest.raises(ProtocolError):
        decode_one_frame(frame(1, 0, payload))


def test_control_frame_applies_the_message_checks():
    with pytest.raises(ProtocolError, match="NUL"):
        decode_one_frame(frame(1, 0, message(1, b"a\0b")))
    with pytest.raises(ProtocolError, match="unknown message type"):
        decode_one_frame(frame(1, 0, message(42)))


@pytest.mark.parametrize("kind, payload", [(1, encode_message(End())), (2, b"")])
@pytest.mark.parametrize("stream_id", [1, 2, 2**32 - 1])
def test_control_and_fds_frames_must_be_on_stream_0(kind, payload, stream_id):
    with pytest.raises(ProtocolError, match="stream"):
        decode_one_frame(frame(kind, stream_id, payload))
    # Refused from the header alone, before the payload arrives.
    decoder = FrameDecoder()
    decoder.feed(frame(kind, stream_id, length=len(payload)))
    with pytest.raises(ProtocolError):
        decoder.next_frame()


def test_stream_close_with_payload_is_refused():
    with pytest.raises(ProtocolError, match="StreamClose"):
        decode_one_frame(frame(4, 3, b"x"))
    decoder = FrameDecoder()
    decoder.feed(frame(4, 3, length=1))  # header alone is enough
    with pytest.raises(ProtocolError):
        decoder.next_frame()


def test_frame_over_max_payload_is_refused_from_its_header():
    limit = 100
    assert decode_one_frame(encode_frame(StreamData(1, b"x" * limit)), max_payload=limit) == StreamData(1, b"x" * limit)
    decoder = FrameDecoder(max_payload=limit)
    decoder.feed(frame(3, 1, length=limit + 1))
    with pytest.raises(ProtocolError, match="limit"):
        decoder.next_frame()
    with pytest.raises(ProtocolError):
        decode_one_frame(encode_frame(ControlFrame(Arg("y" * limit))), max_payload=limit)


def test_frame_decoder_default_limit_admits_a_full_control_message():
    big = ControlFrame(Arg("z" * MAX_CONTROL_PAYLOAD))
    assert decode_one_frame(encode_frame(big)) == big
    decoder = FrameDecoder()
    decoder.feed(frame(3, 0, length=MAX_CONTROL_PAYLOAD + 9))
    with pytest.raises(ProtocolError):
        decoder.next_frame()


def test_frame_decoder_stays_broken_after_an_error():
    decoder = FrameDecoder()
    decoder.feed(frame(9, 0) + encode_frame(StreamData(1, b"ok")))
    with pytest.raises(ProtocolError):
        decoder.next_frame()
    with pytest.raises(ProtocolError):
        decoder.next_frame()
    with pytest.raises(ProtocolError):
        decoder.feed(b"")
