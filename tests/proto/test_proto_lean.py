"""capsudo.proto.lean, the one control codec, agrees byte for byte with the
layouts `_layout` declares with construct, and with the typed messages built on it."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capsudo.proto import (MAX_CONTROL_PAYLOAD, Arg, End, Env, Exit, Fd, ProtocolError, Secret,
                           SessionKind, SessionType, Winsize, decode_header, encode_message, lean)
from proto_strategies import U16, U32, exec_text, text

SETTINGS = settings(max_examples=200, deadline=None)


@SETTINGS
@given(text)
def test_arg(value):
    assert lean.arg(value) == encode_message(Arg(value))


@SETTINGS
@given(text)
def test_env(entry):
    assert lean.env(entry) == encode_message(Env(entry))


@SETTINGS
@given(st.sampled_from(SessionKind))
def test_session_type(kind):
    assert lean.session_type(int(kind)) == encode_message(SessionType(kind))


def test_session_type_constants():
    assert lean.INTERACTIVE == SessionKind.INTERACTIVE
    assert lean.NON_INTERACTIVE == SessionKind.NON_INTERACTIVE


@SETTINGS
@given(U16, U16, U16, U16)
def test_winsize(rows, cols, xpixels, ypixels):
    assert lean.winsize(rows, cols, xpixels, ypixels) == encode_message(Winsize(rows, cols, xpixels, ypixels))
    assert lean.winsize(rows, cols) == encode_message(Winsize(rows, cols))


@SETTINGS
@given(U32)
def test_fd(count):
    assert lean.fd(count) == encode_message(Fd(count))


@SETTINGS
@given(st.binary(max_size=100))
def test_secret(value):
    assert lean.secret(value) == encode_message(Secret(value))


def test_end():
    assert lean.end() == encode_message(End()) == bytes.fromhex("ff000000 00000000")


@SETTINGS
@given(st.lists(exec_text, max_size=5), st.lists(exec_text, max_size=3), st.booleans())
def test_whole_handshake(argv, env_values, interactive):
    env = [f"K{i}={v}" for i, v in enumerate(env_values)]
    kind = SessionKind.INTERACTIVE if interactive else SessionKind.NON_INTERACTIVE
    lean_wire = (
        b"".join(lean.env(e) for e in env)
        + b"".join(lean.arg(a) for a in argv)
        + lean.session_type(int(kind))
        + lean.winsize(24, 80)
        + lean.fd(3)
        + lean.end()
    )
    full_wire = b"".join(
        encode_message(m)
        for m in [*map(Env, env), *map(Arg, argv), SessionType(kind), Winsize(24, 80), Fd(3), End()]
    )
    assert lean_wire == full_wire


def _verdict(func, *args):
    try:
        return "ok", func(*args)
    except ProtocolError:
        return "refused", None


headers = st.one_of(
    st.binary(min_size=8, max_size=8),
    st.builds(
        lambda t, n: struct.pack("<II", t, n),
        st.sampled_from([1, 2, 3, 4, 5, 6, 7, 8, 9, 255, 0, 10, 256]),
        st.one_of(st.integers(0, 64), st.sampled_from([MAX_CONTROL_PAYLOAD, MAX_CONTROL_PAYLOAD + 1, 2**32 - 1])),
    ),
)


@SETTINGS
@given(headers, st.one_of(st.just(MAX_CONTROL_PAYLOAD), st.integers(0, 64)))
def test_parse_header_refuses_what_decode_header_refuses(header, limit):
    lean_verdict, lean_value = _verdict(lean.parse_header, header, limit)
    full_verdict, full_value = _verdict(decode_header, header, limit)
    assert lean_verdict == full_verdict
    if full_verdict == "ok":
        cls, length = full_value
        assert lean_value == (int(cls.type), length)


@pytest.mark.parametrize("header", [
    struct.pack("<II", 0, 0),
    struct.pack("<II", 10, 0),
    struct.pack("<II", 3, MAX_CONTROL_PAYLOAD + 1),
    struct.pack("<II", 6, 2**32 - 1),
])
def test_parse_header_refusals(header):
    with pytest.raises(ProtocolError):
        lean.parse_header(header)
    with pytest.raises(ProtocolError):
        decode_header(header)


@SETTINGS
@given(st.one_of(st.binary(max_size=8), st.builds(lambda n: struct.pack("<i", n), st.integers(-(2**31), 2**31 - 1))))
def test_exit_status_agrees_with_exit(payload):
    lean_verdict, lean_value = _verdict(lean.exit_status, payload)
    full_verdict, full_value = _verdict(Exit.from_payload, payload)
    assert lean_verdict == full_verdict
    if full_verdict == "ok":
        assert lean_value == full_value.status


def test_exit_status_values():
    assert lean.exit_status(bytes.fromhex("01000000")) == 1
    assert lean.exit_status(bytes.fromhex("ffffffff")) == -1
    for bad in (b"", b"\1\0\0", b"\1\0\0\0\0"):
        with pytest.raises(ProtocolError):
            lean.exit_status(bad)


def test_text_replaces_undecodable_bytes():
    assert lean.text(b"unable to run x: \xff") == "unable to run x: \ufffd"


@SETTINGS
@given(U32, U32, st.integers(-(2**31), 2**31 - 1), U16, U16, U16, U16)
def test_the_codec_agrees_with_the_construct_layouts(type_code, length, status, rows, cols, xpixels, ypixels):
    from capsudo.proto import _layout

    assert lean.HEADER.pack(type_code, length) == _layout.CONTROL_HEADER.build({"type": type_code, "length": length})
    assert lean.exit_payload(status) == _layout.EXIT_PAYLOAD.build({"status": status})
    assert lean.fd_payload(length) == _layout.FD_PAYLOAD.build({"count": length})
    assert lean.session_type_payload(length) == _layout.SESSION_TYPE_PAYLOAD.build({"kind": length})
    fields = {"rows": rows, "cols": cols, "xpixels": xpixels, "ypixels": ypixels}
    assert lean.winsize_payload(rows, cols, xpixels, ypixels) == _layout.WINSIZE_PAYLOAD.build(fields)
    assert lean.winsize_fields(_layout.WINSIZE_PAYLOAD.build(fields)) == (rows, cols, xpixels, ypixels)
    assert lean.exit_status(_layout.EXIT_PAYLOAD.build({"status": status})) == status


# Frames: lean's header and Fds records against the construct layouts.

from capsudo.proto import _layout  # noqa: E402


@SETTINGS
@given(st.integers(0, 255), U32, U32)
def test_frame_header(kind, stream_id, length):
    assert lean.frame_header(kind, stream_id, length) == _layout.FRAME_HEADER.build(
        {"kind": kind, "stream_id": stream_id, "length": length}
    )
    assert lean.FRAME_HEADER_SIZE == _layout.FRAME_HEADER_SIZE


@SETTINGS
@given(st.lists(st.tuples(U32, st.sampled_from((lean.READ, lean.WRITE, lean.READ_WRITE))), max_size=8))
def test_fds_records(streams):
    payload = b"".join(_layout.FDS_RECORD.build({"stream_id": s, "direction": d}) for s, d in streams)
    assert lean.fds_frame(streams) == _layout.FRAME_HEADER.build(
        {"kind": lean.FDS_FRAME, "stream_id": 0, "length": len(payload)}
    ) + payload
    assert lean.fds_records(payload) == streams


@pytest.mark.parametrize(
    "header, error",
    [
        (lean.frame_header(9, 0, 0), "unknown frame kind 9"),
        (lean.frame_header(lean.STREAM_DATA, 2, 101), "more than the limit of 100"),
        (lean.frame_header(lean.CONTROL_FRAME, 2, 8), "CONTROL frame on stream 2, expected 0"),
        (lean.frame_header(lean.FDS_FRAME, 1, 5), "FDS frame on stream 1, expected 0"),
        (lean.frame_header(lean.STREAM_CLOSE, 2, 1), "StreamClose frame carries no payload"),
    ],
)
def test_frame_header_rules(header, error):
    with pytest.raises(ProtocolError, match=error):
        lean.parse_frame_header(header, 100)


def test_fds_record_rules():
    with pytest.raises(ProtocolError, match="not a multiple of 5"):
        lean.fds_records(b"\0" * 6)
    with pytest.raises(ProtocolError, match="unknown direction 7"):
        lean.fds_records(struct.pack("<IB", 0, 7))


def test_control_of_frame():
    assert lean.control_of_frame(lean.arg("x")) == (lean.ARG, b"x")
    for bad in (b"\1\0\0", lean.arg("x") + b"y", lean.arg("xy")[:-1]):
        with pytest.raises(ProtocolError, match="exactly one control message"):
            lean.control_of_frame(bad)
