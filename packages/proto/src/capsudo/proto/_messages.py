"""Control messages: typed values, and their encoding to and from bytes."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar, Union

from construct import ConstructError

from . import _layout
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


def _text(payload: bytes, what: str) -> str:
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"{what} is not valid UTF-8") from exc


def _exec_string(payload: bytes, what: str) -> str:
    # argv and environment entries become C strings in execve(); a NUL inside
    # one would silently cut it, so it is refused here.
    if b"\0" in payload:
        raise ProtocolError(f"{what} contains a NUL byte")
    return _text(payload, what)


def _fixed(layout, payload: bytes, size: int, what: str):
    if len(payload) != size:
        raise ProtocolError(f"{what} payload must be {size} bytes, got {len(payload)}")
    try:
        return layout.parse(payload)
    except ConstructError as exc:  # pragma: no cover - sizes are checked above
        raise ProtocolError(f"malformed {what} payload") from exc


@dataclass(frozen=True, slots=True)
class Arg:
    """One element of the requested argv."""

    value: str
    type: ClassVar[MessageType] = MessageType.ARG

    def payload(self) -> bytes:
        return self.value.encode()

    @classmethod
    def from_payload(cls, payload: bytes) -> Arg:
        return cls(_exec_string(payload, "Arg"))


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
        entry = _exec_string(payload, "Env")
        if "=" not in entry or entry.startswith("="):
            raise ProtocolError("Env entry must have the form KEY=VALUE")
        return cls(entry)


@dataclass(frozen=True, slots=True)
class Exit:
    """The program's status: its exit code, or 128 + the signal that killed it."""

    status: int
    type: ClassVar[MessageType] = MessageType.EXIT

    def payload(self) -> bytes:
        return _layout.EXIT_PAYLOAD.build({"status": self.status})

    @classmethod
    def from_payload(cls, payload: bytes) -> Exit:
        return cls(_fixed(_layout.EXIT_PAYLOAD, payload, 4, "Exit").status)


@dataclass(frozen=True, slots=True)
class Fd:
    """Announces descriptors; they travel out of band (SCM_RIGHTS, or streams)."""

    count: int
    type: ClassVar[MessageType] = MessageType.FD

    def payload(self) -> bytes:
        return _layout.FD_PAYLOAD.build({"count": self.count})

    @classmethod
    def from_payload(cls, payload: bytes) -> Fd:
        return cls(_fixed(_layout.FD_PAYLOAD, payload, 4, "Fd").count)


@dataclass(frozen=True, slots=True)
class SessionType:
    kind: SessionKind
    type: ClassVar[MessageType] = MessageType.SESSION_TYPE

    def payload(self) -> bytes:
        return _layout.SESSION_TYPE_PAYLOAD.build({"kind": int(self.kind)})

    @classmethod
    def from_payload(cls, payload: bytes) -> SessionType:
        value = _fixed(_layout.SESSION_TYPE_PAYLOAD, payload, 4, "SessionType").kind
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
        return cls(payload.decode("utf-8", "replace"))


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
        return cls(payload.decode("utf-8", "replace"))


@dataclass(frozen=True, slots=True)
class Winsize:
    rows: int
    cols: int
    xpixels: int = 0
    ypixels: int = 0
    type: ClassVar[MessageType] = MessageType.WINSIZE

    def payload(self) -> bytes:
        return _layout.WINSIZE_PAYLOAD.build(
            {"rows": self.rows, "cols": self.cols, "xpixels": self.xpixels, "ypixels": self.ypixels}
        )

    @classmethod
    def from_payload(cls, payload: bytes) -> Winsize:
        w = _fixed(_layout.WINSIZE_PAYLOAD, payload, 8, "Winsize")
        return cls(w.rows, w.cols, w.xpixels, w.ypixels)


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


Message = Union[Arg, Env, Exit, Fd, SessionType, Error, Secret, Unauthorized, Winsize, End]

MESSAGE_CLASSES: dict[int, type] = {
    cls.type: cls
    for cls in (Arg, Env, Exit, Fd, SessionType, Error, Secret, Unauthorized, Winsize, End)
}


def encode_message(message: Message) -> bytes:
    """The message's bytes on the wire: header, then payload."""
    payload = message.payload()
    if len(payload) > MAX_CONTROL_PAYLOAD:
        raise ValueError(f"{type(message).__name__} payload exceeds {MAX_CONTROL_PAYLOAD} bytes")
    header = _layout.CONTROL_HEADER.build({"type": int(message.type), "length": len(payload)})
    return header + payload


def decode_header(header: bytes, max_payload: int = MAX_CONTROL_PAYLOAD) -> tuple[type, int]:
    """The message class and payload length an 8-byte header announces.

    Checks the type and the length before anyone reads or buffers a payload.
    """
    parsed = _layout.CONTROL_HEADER.parse(header)
    cls = MESSAGE_CLASSES.get(parsed.type)
    if cls is None:
        raise ProtocolError(f"unknown message type {parsed.type}")
    if parsed.length > max_payload:
        raise ProtocolError(
            f"{cls.__name__} message announces {parsed.length} bytes, more than the limit of {max_payload}"
        )
    return cls, parsed.length


def decode_payload(cls: type, payload: bytes) -> Message:
    return cls.from_payload(payload)
