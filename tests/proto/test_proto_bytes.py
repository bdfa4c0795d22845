"""Byte-exact encodings, written out by hand from protocol.md.

Each vector is checked both ways: the value encodes to exactly these bytes,
and these bytes decode to exactly this value.
"""

from __future__ import annotations

import pytest

from capsudo.proto import (Arg, ControlDecoder, ControlFrame, Direction, End, Env, Error, Exit, Fd,
                           FdsFrame, FrameDecoder, FrameKind, MessageType, Secret, SessionKind,
                           SessionType, StreamClose, StreamData, Unauthorized, Winsize,
                           encode_data_header, encode_frame, encode_message)


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


MESSAGE_VECTORS = [
    # The two examples given in protocol.md, section 1.
    pytest.param(Arg("ls"), "01000000 02000000 6c73", id="Arg-ls"),
    pytest.param(Exit(1), "03000000 04000000 01000000", id="Exit-1"),
    pytest.param(Arg(""), "01000000 00000000", id="Arg-empty"),
    pytest.param(Arg("é"), "01000000 02000000 c3a9", id="Arg-utf8"),
    pytest.param(Env("A=b"), "02000000 03000000 413d62", id="Env"),
    pytest.param(Env("K="), "02000000 02000000 4b3d", id="Env-empty-value"),
    pytest.param(Exit(0), "03000000 04000000 00000000", id="Exit-0"),
    pytest.param(Exit(127), "03000000 04000000 7f000000", id="Exit-127"),
    pytest.param(Exit(-1), "03000000 04000000 ffffffff", id="Exit-minus-1"),
    pytest.param(Exit(-2), "03000000 04000000 feffffff", id="Exit-minus-2"),
    pytest.param(Exit(-(2**31)), "03000000 04000000 00000080", id="Exit-i32-min"),
    pytest.param(Exit(2**31 - 1), "03000000 04000000 ffffff7f", id="Exit-i32-max"),
    pytest.param(Fd(3), "04000000 04000000 03000000", id="Fd-3"),
    pytest.param(Fd(0x01020304), "04000000 04000000 04030201", id="Fd-byte-order"),
    pytest.param(SessionType(SessionKind.AUTO), "05000000 04000000 01000000", id="SessionType-auto"),
    pytest.param(SessionType(SessionKind.INTERACTIVE), "05000000 04000000 02000000", id="SessionType-interactive"),
    pytest.param(SessionType(SessionKind.NON_INTERACTIVE), "05000000 04000000 03000000", id="SessionType-noninteractive"),
    pytest.param(Error("no"), "06000000 02000000 6e6f", id="Error"),
    pytest.param(Secret(b"\x00\xffpw"), "07000000 04000000 00ff7077", id="Secret-raw-bytes"),
    pytest.param(Unauthorized("pw: "), "08000000 04000000 70773a20", id="Unauthorized"),
    pytest.param(Winsize(24, 80, 640, 480), "09000000 08000000 1800 5000 8002 e001", id="Winsize"),
    pytest.param(Winsize(0x0102, 0x0304), "09000000 08000000 0201 0403 0000 0000", id="Winsize-defaults"),
    pytest.param(End(), "ff000000 00000000", id="End"),
]


@pytest.mark.parametrize("message, wire", MESSAGE_VECTORS)
def test_message_encodes_to_exact_bytes(message, wire):
    assert encode_message(message) == h(wire)


@pytest.mark.parametrize("message, wire", MESSAGE_VECTORS)
def test_exact_bytes_decode_to_message(message, wire):
    decoder = ControlDecoder()
    decoder.feed(h(wire))
    assert list(decoder.messages()) == [message]
    assert decoder.at_boundary


def test_message_type_numbers_match_the_table():
    assert {t.name: int(t) for t in MessageType} == {
        "ARG": 1, "ENV": 2, "EXIT": 3, "FD": 4, "SESSION_TYPE": 5, "ERROR": 6,
        "SECRET": 7, "UNAUTHORIZED": 8, "WINSIZE": 9, "END": 255,
    }


def test_secret_repr_hides_the_secret():
    assert "hunter2" not in repr(Secret(b"hunter2"))
    assert "hunter2" not in str(Secret(b"hunter2"))


FRAME_VECTORS = [
    pytest.param(
        ControlFrame(Exit(1)),
        "01 00000000 0c000000 03000000 04000000 01000000",
        id="Control-Exit-1",
    ),
    pytest.param(
        ControlFrame(Arg("ls")),
        "01 00000000 0a000000 01000000 02000000 6c73",
        id="Control-Arg-ls",
    ),
    pytest.param(
        ControlFrame(End()),
        "01 00000000 08000000 ff000000 00000000",
        id="Control-End",
    ),
    pytest.param(
        FdsFrame(((0, Direction.READ), (1, Direction.WRITE), (2, Direction.WRITE))),
        "02 00000000 0f000000 00000000 00 01000000 01 02000000 01",
        id="Fds-stdio",
    ),
    pytest.param(
        FdsFrame(((0x0A0B0C0D, Direction.READ_WRITE),)),
        "02 00000000 05000000 0d0c0b0a 02",
        id="Fds-readwrite",
    ),
    pytest.param(FdsFrame(()), "02 00000000 00000000", id="Fds-empty"),
    pytest.param(StreamData(5, b"hi"), "03 05000000 02000000 6869", id="StreamData"),
    pytest.param(StreamData(0x01020304, b""), "03 04030201 00000000", id="StreamData-empty"),
    pytest.param(StreamClose(7), "04 07000000 00000000", id="StreamClose"),
    pytest.param(StreamClose(0xFFFFFFFF), "04 ffffffff 00000000", id="StreamClose-max-id"),
]


@pytest.mark.parametrize("frame, wire", FRAME_VECTORS)
def test_frame_encodes_to_exact_bytes(frame, wire):
    assert encode_frame(frame) == h(wire)


@pytest.mark.parametrize("frame, wire", FRAME_VECTORS)
def test_exact_bytes_decode_to_frame(frame, wire):
    decoder = FrameDecoder()
    decoder.feed(h(wire))
    assert list(decoder.frames()) == [frame]
    assert decoder.at_boundary


def test_frame_kind_and_direction_numbers_match_the_table():
    assert {k.name: int(k) for k in FrameKind} == {
        "CONTROL": 1, "FDS": 2, "STREAM_DATA": 3, "STREAM_CLOSE": 4,
    }
    assert {d.name: int(d) for d in Direction} == {"READ": 0, "WRITE": 1, "READ_WRITE": 2}


def test_data_header_is_the_stream_data_header():
    assert encode_data_header(1, 300) == h("03 01000000 2c010000")
    payload = b"x" * 300
    assert encode_data_header(1, 300) + payload == encode_frame(StreamData(1, payload))


def test_encoding_refuses_a_payload_over_the_contract_limit():
    # A local mistake, not a peer's: ValueError, not ProtocolError.
    with pytest.raises(ValueError):
        encode_message(Secret(b"\0" * (16 * 1024 * 1024 + 1)))
    assert len(encode_message(Secret(b"\0" * (16 * 1024 * 1024)))) == 16 * 1024 * 1024 + 8
