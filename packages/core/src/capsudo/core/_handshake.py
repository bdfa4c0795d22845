"""The daemon's side of the configuration phase: messages until End."""

from __future__ import annotations

from dataclasses import dataclass, field

from capsudo.proto import Arg, End, Env, Fd, ProtocolError, Secret, SessionKind, SessionType, Winsize
from capsudo.transport import MessageChannel, close_fds

from ._limits import SessionLimits
from ._serving import handshake_finished

STDIO_COUNT = 3


class HandshakeError(Exception):
    """The client's configuration cannot be accepted; the text goes back to it."""


@dataclass
class Request:
    """What a client asked for, before attenuation."""

    argv: list[str] = field(default_factory=list)
    env_entries: list[str] = field(default_factory=list)
    kind: SessionKind = SessionKind.NON_INTERACTIVE
    winsize: Winsize | None = None
    fds: list[int] = field(default_factory=list)
    # Kept only so a proxy can pass it on to a front-end; a daemon ignores it.
    secret: bytes | None = field(default=None, repr=False)

    @property
    def interactive(self) -> bool:
        return self.kind is SessionKind.INTERACTIVE

    def close_fds(self) -> None:
        close_fds(self.fds)
        self.fds = []


async def read_request(channel: MessageChannel, limits: SessionLimits) -> Request | None:
    """Read the configuration up to End; None when the client left before End.

    Accepts the messages in any order; the last SessionType and Winsize win.
    Every message before End counts against max_bytes, whatever its type;
    the channel refuses one too large for what is left before reading it.
    Raises HandshakeError or ProtocolError; either way no descriptor leaks.
    """
    request = Request()
    items = size = messages = 0
    channel.limit_handshake(limits.max_bytes)
    try:
        while True:
            received = await channel.receive()
            if received is None:
                request.close_fds()
                return None
            message = received.message
            messages += 1
            if messages > limits.max_handshake_messages:
                close_fds(received.fds)
                raise HandshakeError(f"too many messages before End (limit {limits.max_handshake_messages})")
            size += len(message.payload())
            if size > limits.max_bytes:
                close_fds(received.fds)
                raise HandshakeError(f"the messages before End exceed {limits.max_bytes} bytes")
            if isinstance(message, (Arg, Env)):
                items += 1
                if items > limits.max_items:
                    raise HandshakeError(f"too many arguments and environment entries (limit {limits.max_items})")
                if isinstance(message, Arg):
                    request.argv.append(message.value)
                else:
                    request.env_entries.append(message.entry)
            elif isinstance(message, Fd):
                if request.fds:
                    close_fds(received.fds)
                    raise HandshakeError("descriptors were delegated twice")
                if message.count != STDIO_COUNT:
                    close_fds(received.fds)
                    raise HandshakeError(f"expected {STDIO_COUNT} descriptors (stdin, stdout, stderr), got {message.count}")
                request.fds = received.fds
            elif isinstance(message, SessionType):
                # Auto is for the client to resolve; a daemon has no terminal to look at.
                request.kind = (
                    SessionKind.INTERACTIVE if message.kind is SessionKind.INTERACTIVE else SessionKind.NON_INTERACTIVE
                )
            elif isinstance(message, Winsize):
                request.winsize = message
            elif isinstance(message, Secret):
                request.secret = message.secret
            elif isinstance(message, End):
                if not request.fds:
                    raise HandshakeError("no descriptors were delegated before End")
                handshake_finished()
                return request
            else:
                raise ProtocolError(f"a client may not send {type(message).__name__}")
    except BaseException:
        request.close_fds()
        raise
