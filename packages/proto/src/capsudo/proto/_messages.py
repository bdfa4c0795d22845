"""Control messages: typed values, and their encoding to and from bytes."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar, Union

from . import lean
from ._errors import ProtocolError
from ._limits import MAX_CONTROL_PAYLOAD


class MessageType(enum.IntEnum):
    ARG = 1
    ENV = 2
    EXIT = 3
    FD = 4
    SESSION_TYPE = 5
    ERROR = 6
    SECRET = 7
    UNAUTHORIZED = 8
    WINSIZE = 9
    END = 255


class SessionKind(enum.IntEnum):
    AUTO = 1
    INTERACTIVE = 2
    NON_INTERACTIVE = 3


@dataclass(frozen=True, slots=True)
class Arg:
    """One element of the requested argv."""

    value: str
    type: ClassVar[MessageType] = MessageType.ARG

    def payload(self) -> bytes:
        return self.value.encode()

    @classmethod
    def from_payload(cls, payload: bytes) -> Arg:
        return cls(lean.exec_string(payload, "Arg"))


@dataclass(frozen=True, slots=True)
class Env:
    """One KEY=VALUE environment entry."""

    entry: str
    type: ClassVar[MessageType] = MessageType.ENV

    @property
    def key(self) -> str:
        return self.entry.partition("=")[0]

    def payload(self) -> bytes:
        return self.entry.encode()

    @classmethod
    def from_payload(cls, payload: bytes) -> Env:
        return cls(lean.env_entry(payload))


@dataclass(frozen=True, slots=True)
class Exit:
    """The program's status: its exit code, or 128 + the signal that killed it."""

    status: int
    type: ClassVar[MessageType] = MessageType.EXIT

    def payload(self) -> bytes:
        return lean.exit_payload(self.status)

    @classmethod
    def from_payload(cls, payload: bytes) -> Exit:
        return cls(lean.exit_status(payload))


@dataclass(frozen=True, slots=True)
class Fd:
    """Announces descriptors; they travel out of band (SCM_RIGHTS, or streams)."""

    count: int
    type: ClassVar[MessageType] = MessageType.FD

    def payload(self) -> bytes:
        return lean.fd_payload(self.count)

    @classmethod
    def from_payload(cls, payload: bytes) -> Fd:
        return cls(lean.u32(payload, "Fd"))


@dataclass(frozen=True, slots=True)
class SessionType:
    kind: SessionKind
    type: ClassVar[MessageType] = MessageType.SESSION_TYPE

    def payload(self) -> bytes:
        return lean.session_type_payload(int(self.kind))

    @classmethod
    def from_payload(cls, payload: bytes) -> SessionType:
        value = lean.u32(payload, "SessionType")
        try:
            return cls(SessionKind(value))
        except ValueError:
            raise ProtocolError(f"unknown session type {value}") from None


@dataclass(frozen=True, slots=True)
class Error:
    """Human-readable text explaining why a session failed."""

    text: str
    type: ClassVar[MessageType] = MessageType.ERROR

    def payload(self) -> bytes:
        return self.text.encode()

    @classmethod
    def from_payload(cls, payload: bytes) -> Error:
        # Shown to a person, so undecodable bytes are replaced, not refused.
        return cls(lean.text(payload))


@dataclass(frozen=True, slots=True)
class Secret:
    """An authentication secret for a password front-end. Never printed."""

    secret: bytes
    type: ClassVar[MessageType] = MessageType.SECRET

    def __repr__(self) -> str:
        return f"Secret(<{len(self.secret)} bytes>)"

    def payload(self) -> bytes:
        return self.secret

    @classmethod
    def from_payload(cls, payload: bytes) -> Secret:
        return cls(bytes(payload))


@dataclass(frozen=True, slots=True)
class Unauthorized:
    """A front-end's challenge: the prompt to show before sending a Secret."""

    prompt: str
    type: ClassVar[MessageType] = MessageType.UNAUTHORIZED

    def payload(self) -> bytes:
        return self.prompt.encode()

    @classmethod
    def from_payload(cls, payload: bytes) -> Unauthorized:
        return cls(lean.text(payload))


@dataclass(frozen=True, slots=True)
class Winsize:
    rows: int
    cols: int
    xpixels: int = 0
    ypixels: int = 0
    type: ClassVar[MessageType] = MessageType.WINSIZE

    def __iter__(self):
        # rows, cols, xpixels, ypixels: a Winsize goes wherever the 4-tuple of a terminal's size does.
        return iter((self.rows, self.cols, self.xpixels, self.ypixels))

    def payload(self) -> bytes:
        return lean.winsize_payload(self.rows, self.cols, self.xpixels, self.ypixels)

    @classmethod
    def from_payload(cls, payload: bytes) -> Winsize:
        return cls(*lean.winsize_fields(payload))


@dataclass(frozen=True, slots=True)
class End:
    """Ends the configuration phase of the handshake."""

    type: ClassVar[MessageType] = MessageType.END

    def payload(self) -> bytes:
        return b""

    @classmethod
    def from_payload(cls, payload: bytes) -> End:
        if payload:
            raise ProtocolError("End carries no payload")
        return cls()


@dataclass(frozen=True, slots=True)
class Describe:
    """An extension: the client asks what the endpoint does, alone on its connection."""

    type: ClassVar[int] = lean.DESCRIBE

    def payload(self) -> bytes:
        return b""

    @classmethod
    def from_payload(cls, payload: bytes) -> Describe:
        if payload:
            raise ProtocolError("Describe carries no payload")
        return cls()


@dataclass(frozen=True, slots=True)
class Description:
    """An extension: the daemon's answer to Describe, a JSON object (docs/protocol.md, "Extensions")."""

    fields: dict
    type: ClassVar[int] = lean.DESCRIPTION

    def payload(self) -> bytes:
        import json

        return json.dumps(self.fields, sort_keys=True).encode()

    @classmethod
    def from_payload(cls, payload: bytes) -> Description:
        import json

        try:
            fields = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise ProtocolError("Description is not a JSON object") from None
        if not isinstance(fields, dict):
            raise ProtocolError("Description is not a JSON object")
        return cls(fields)


Message = Union[Arg, Env, Exit, Fd, SessionType, Error, Secret, Unauthorized, Winsize, End, Describe, Description]

MESSAGE_CLASSES: dict[int, type] = {
    cls.type: cls
    for cls in (Arg, Env, Exit, Fd, SessionType, Error, Secret, Unauthorized, Winsize, End, Describe, Description)
}


def encode_message(message: Message) -> bytes:
    """The message's bytes on the wire: header, then payload."""
    payload = message.payload()
    if len(payload) > MAX_CONTROL_PAYLOAD:
        raise ValueError(f"{type(message).__name__} payload exceeds {MAX_CONTROL_PAYLOAD} bytes")
    return lean.message(int(message.type), payload)


def decode_header(header: bytes, max_payload: int = MAX_CONTROL_PAYLOAD, classes=None) -> tuple[type, int]:
    """The message class and payload length an 8-byte header announces.

    Checks the type and the length before anyone reads or buffers a payload.
    `classes` maps type codes to message classes (a protocol that knows more
    messages passes its own).
    """
    classes = MESSAGE_CLASSES if classes is None else classes
    type_code, length = lean.parse_header(header, max_payload, classes)
    return classes[type_code], length


def decode_payload(cls: type, payload: bytes) -> Message:
    return cls.from_payload(payload)
