"""The slice of the control codec that a one-shot client needs, in plain struct.

A client is started for every command, and importing construct costs more
than the whole session on a local socket. This module encodes the handshake
and reads the replies with the standard library alone; the test suite checks
it byte for byte against the construct codec.
"""

from __future__ import annotations

import struct

from ._errors import ProtocolError
from ._limits import MAX_CONTROL_PAYLOAD

HEADER = struct.Struct("<II")
HEADER_SIZE = HEADER.size

ARG, ENV, EXIT, FD, SESSION_TYPE, ERROR, SECRET, UNAUTHORIZED, WINSIZE, END = 1, 2, 3, 4, 5, 6, 7, 8, 9, 255
KNOWN_TYPES = frozenset((ARG, ENV, EXIT, FD, SESSION_TYPE, ERROR, SECRET, UNAUTHORIZED, WINSIZE, END))
INTERACTIVE, NON_INTERACTIVE = 2, 3

_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_WINSIZE = struct.Struct("<HHHH")


def message(type_code: int, payload: bytes = b"") -> bytes:
    return HEADER.pack(type_code, len(payload)) + payload


def arg(value: str) -> bytes:
    return message(ARG, value.encode())


def env(entry: str) -> bytes:
    return message(ENV, entry.encode())


def session_type(kind: int) -> bytes:
    return message(SESSION_TYPE, _U32.pack(kind))


def winsize(rows: int, cols: int, xpixels: int = 0, ypixels: int = 0) -> bytes:
    return message(WINSIZE, _WINSIZE.pack(rows, cols, xpixels, ypixels))


def fd(count: int) -> bytes:
    return message(FD, _U32.pack(count))


def secret(value: bytes) -> bytes:
    return message(SECRET, value)


def end() -> bytes:
    return message(END)


def parse_header(header: bytes, max_payload: int = MAX_CONTROL_PAYLOAD) -> tuple[int, int]:
    type_code, length = HEADER.unpack(header)
    if type_code not in KNOWN_TYPES:
        raise ProtocolError(f"unknown message type {type_code}")
    if length > max_payload:
        raise ProtocolError(f"message announces {length} bytes, more than the limit of {max_payload}")
    return type_code, length


def exit_status(payload: bytes) -> int:
    if len(payload) != 4:
        raise ProtocolError(f"Exit payload must be 4 bytes, got {len(payload)}")
    return _I32.unpack(payload)[0]


def text(payload: bytes) -> str:
    return payload.decode("utf-8", "replace")
