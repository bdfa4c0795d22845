"""The control messages' codec: type codes, header, and each payload, in plain struct.

The one encoder and decoder of control messages. The typed messages of
`capsudo.proto` build and check their payloads here, and a one-shot client
uses it directly: it is started for every command, and importing construct
or even enum and dataclasses would cost more than its whole session on a
local socket. The test suite checks it byte for byte against the layouts
that `_layout` declares with construct.
"""

from __future__ import annotations

import struct

from ._errors import ProtocolError
from ._limits import MAX_CONTROL_PAYLOAD

HEADER = struct.Struct("<II")
HEADER_SIZE = HEADER.size

ARG, ENV, EXIT, FD, SESSION_TYPE, ERROR, SECRET, UNAUTHORIZED, WINSIZE, END = 1, 2, 3, 4, 5, 6, 7, 8, 9, 255
KNOWN_TYPES = frozenset((ARG, ENV, EXIT, FD, SESSION_TYPE, ERROR, SECRET, UNAUTHORIZED, WINSIZE, END))
NAMES = {ARG: "Arg", ENV: "Env", EXIT: "Exit", FD: "Fd", SESSION_TYPE: "SessionType", ERROR: "Error",
         SECRET: "Secret", UNAUTHORIZED: "Unauthorized", WINSIZE: "Winsize", END: "End"}
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
