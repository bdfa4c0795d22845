"""The wire's codec in plain struct: control messages, and the multiplexer's frame headers.

The one encoder and decoder of control messages and of frame headers and
Fds records. The typed messages and frames of `capsudo.proto` build and
check their bytes here, and a one-shot client uses it directly: it is
started for every command, and importing construct or even enum and
dataclasses would cost more than its whole session on a local socket. The
test suite checks it byte for byte against the layouts that `_layout`
declares with construct.
"""

from __future__ import annotations

import struct

from ._errors import ProtocolError
from ._limits import MAX_CONTROL_PAYLOAD

HEADER = struct.Struct("<II")
HEADER_SIZE = HEADER.size

ARG, ENV, EXIT, FD, SESSION_TYPE, ERROR, SECRET, UNAUTHORIZED, WINSIZE, END = 1, 2, 3, 4, 5, 6, 7, 8, 9, 255
KNOWN_TYPES = frozenset((ARG, ENV, EXIT, FD, SESSION_TYPE, ERROR, SECRET, UNAUTHORIZED, WINSIZE, END))
# Our extension (docs/protocol.md, "Extensions"): asked and answered only
# on a connection of its own, so the reference peers never meet them in a session.
DESCRIBE, DESCRIPTION = 32, 33
NAMES = {ARG: "Arg", ENV: "Env", EXIT: "Exit", FD: "Fd", SESSION_TYPE: "SessionType", ERROR: "Error",
         SECRET: "Secret", UNAUTHORIZED: "Unauthorized", WINSIZE: "Winsize", END: "End",
         DESCRIBE: "Describe", DESCRIPTION: "Description"}
AUTO, INTERACTIVE, NON_INTERACTIVE = 1, 2, 3

_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_WINSIZE = struct.Struct("<HHHH")


def message(type_code: int, payload: bytes = b"") -> bytes:
    return HEADER.pack(type_code, len(payload)) + payload


# Payloads, for the typed messages and for the one-shot client alike.


def u32_payload(value: int) -> bytes:
    return _U32.pack(value)


session_type_payload = fd_payload = u32_payload


def exit_payload(status: int) -> bytes:
    return _I32.pack(status)


def winsize_payload(rows: int, cols: int, xpixels: int = 0, ypixels: int = 0) -> bytes:
    return _WINSIZE.pack(rows, cols, xpixels, ypixels)


def _fixed(payload: bytes, size: int, what: str) -> None:
    if len(payload) != size:
        raise ProtocolError(f"{what} payload must be {size} bytes, got {len(payload)}")


def u32(payload: bytes, what: str) -> int:
    _fixed(payload, 4, what)
    return _U32.unpack(payload)[0]


def exit_status(payload: bytes) -> int:
    _fixed(payload, 4, "Exit")
    return _I32.unpack(payload)[0]


def winsize_fields(payload: bytes) -> tuple[int, int, int, int]:
    _fixed(payload, 8, "Winsize")
    return _WINSIZE.unpack(payload)


def text(payload: bytes) -> str:
    """Text shown to a person: undecodable bytes are replaced, not refused."""
    return payload.decode("utf-8", "replace")


def strict_text(payload: bytes, what: str) -> str:
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"{what} is not valid UTF-8") from exc


def exec_string(payload: bytes, what: str) -> str:
    # argv and environment entries become C strings in execve(); a NUL inside
    # one would silently cut it, so it is refused here.
    if b"\0" in payload:
        raise ProtocolError(f"{what} contains a NUL byte")
    return strict_text(payload, what)


def env_entry(payload: bytes) -> str:
    entry = exec_string(payload, "Env")
    if "=" not in entry or entry.startswith("="):
        raise ProtocolError("Env entry must have the form KEY=VALUE")
    return entry


# Whole messages, for the one-shot client.


def arg(value: str) -> bytes:
    return message(ARG, value.encode())


def env(entry: str) -> bytes:
    return message(ENV, entry.encode())


def session_type(kind: int) -> bytes:
    return message(SESSION_TYPE, session_type_payload(kind))


def winsize(rows: int, cols: int, xpixels: int = 0, ypixels: int = 0) -> bytes:
    return message(WINSIZE, winsize_payload(rows, cols, xpixels, ypixels))


def fd(count: int) -> bytes:
    return message(FD, fd_payload(count))


def secret(value: bytes) -> bytes:
    return message(SECRET, value)


def end() -> bytes:
    return message(END)


def parse_header(header: bytes, max_payload: int = MAX_CONTROL_PAYLOAD, known=KNOWN_TYPES) -> tuple[int, int]:
    """The type code and payload length an 8-byte header announces, both checked
    before anyone reads or buffers a payload."""
    type_code, length = HEADER.unpack(header)
    if type_code not in known:
        raise ProtocolError(f"unknown message type {type_code}")
    if length > max_payload:
        name = NAMES.get(type_code, f"type {type_code}")
        raise ProtocolError(f"{name} message announces {length} bytes, more than the limit of {max_payload}")
    return type_code, length


# Frames of the multiplexed byte channel (protocol.md, section 3).

FRAME_HEADER = struct.Struct("<BII")
FRAME_HEADER_SIZE = FRAME_HEADER.size
CONTROL_FRAME, FDS_FRAME, STREAM_DATA, STREAM_CLOSE = 1, 2, 3, 4
FRAME_NAMES = {CONTROL_FRAME: "CONTROL", FDS_FRAME: "FDS", STREAM_DATA: "STREAM_DATA", STREAM_CLOSE: "STREAM_CLOSE"}
#: Which way a delegated descriptor's bytes flow, seen from its sender.
READ, WRITE, READ_WRITE = 0, 1, 2
FDS_RECORD = struct.Struct("<IB")
FDS_RECORD_SIZE = FDS_RECORD.size


def frame_header(kind: int, stream_id: int, length: int) -> bytes:
    return FRAME_HEADER.pack(kind, stream_id, length)


def frame(kind: int, stream_id: int, payload: bytes = b"") -> bytes:
    return FRAME_HEADER.pack(kind, stream_id, len(payload)) + payload


def control_frame(control_message: bytes) -> bytes:
    """A Control frame around one whole control message (header included)."""
    return frame(CONTROL_FRAME, 0, control_message)


def fds_frame(streams) -> bytes:
    """An Fds frame announcing (stream id, direction) pairs."""
    return frame(FDS_FRAME, 0, b"".join(FDS_RECORD.pack(stream_id, direction) for stream_id, direction in streams))


def parse_frame_header(header: bytes, max_payload: int) -> tuple[int, int, int]:
    """The kind, stream id and payload length a 9-byte frame header announces,
    checked before anyone reads or buffers the payload."""
    kind, stream_id, length = FRAME_HEADER.unpack(header)
    if kind not in FRAME_NAMES:
        raise ProtocolError(f"unknown frame kind {kind}")
    if length > max_payload:
        raise ProtocolError(f"frame announces {length} bytes, more than the limit of {max_payload}")
    if kind in (CONTROL_FRAME, FDS_FRAME) and stream_id != 0:
        raise ProtocolError(f"{FRAME_NAMES[kind]} frame on stream {stream_id}, expected 0")
    if kind == STREAM_CLOSE and length:
        raise ProtocolError("StreamClose frame carries no payload")
    return kind, stream_id, length


def fds_records(payload: bytes) -> list[tuple[int, int]]:
    """The (stream id, direction) pairs of an Fds frame's payload."""
    if len(payload) % FDS_RECORD_SIZE:
        raise ProtocolError(f"Fds frame length {len(payload)} is not a multiple of {FDS_RECORD_SIZE}")
    records = list(FDS_RECORD.iter_unpack(payload))
    for _, direction in records:
        if direction not in (READ, WRITE, READ_WRITE):
            raise ProtocolError(f"Fds frame names unknown direction {direction}")
    return records


def control_of_frame(payload: bytes) -> tuple[int, bytes]:
    """The one control message (type code, payload) that a Control frame's payload holds."""
    if len(payload) < HEADER_SIZE:
        raise ProtocolError("a Control frame must hold exactly one control message")
    type_code, length = parse_header(payload[:HEADER_SIZE])
    if HEADER_SIZE + length != len(payload):
        raise ProtocolError("a Control frame must hold exactly one control message")
    return type_code, payload[HEADER_SIZE:]
