"""The daemon's side of the configuration phase: the session protocol, driven until End.

The rules are the protocol's (capsudo.proto.SessionProtocol); this module
only moves messages to it and keeps the descriptors the client delegates,
which the protocol, doing no I/O, never holds.
"""

from __future__ import annotations

from capsudo.proto import DAEMON, Configured, DescribeAsked, HandshakeLimits, Refused, SessionProtocol, reason
from capsudo.proto import Request as _ProtocolRequest
from capsudo.transport import MessageChannel, close_fds

from ._descriptor_rights import descriptor_fault
from ._limits import SessionLimits
from ._serving import handshake_finished


class Request(_ProtocolRequest):
    """What a client asked for, with the descriptors it delegated (ours to close)."""

    __slots__ = ()

    def close_fds(self) -> None:
        close_fds(self.fds)
        self.fds = []


def daemon_protocol(limits: SessionLimits, protocol: type[SessionProtocol] = SessionProtocol) -> SessionProtocol:
    """The daemon's side of one session, under these limits."""
    handshake = HandshakeLimits(limits.max_items, limits.max_bytes, limits.max_handshake_messages)
    return protocol(DAEMON, handshake, Request())


async def read_request(channel: MessageChannel, protocol: SessionProtocol) -> Request | None:
    """Read the configuration up to End (or a Describe); None when the client left before End.

    Everything before End counts against the protocol's byte limit, and the
    channel refuses a message too large for what is left before reading it.
    Raises Refused or ProtocolError; either way no descriptor leaks.
    Delegated descriptors without the rights their place needs are refused
    (see _descriptor_rights).
    """
    request = protocol.request
    channel.limit_handshake(protocol.limits.max_bytes)
    try:
        while True:
            received = await channel.receive()
            if received is None:
                request.close_fds()
                return None
            try:
                event = protocol.receive(received.message)
            except BaseException:
                close_fds(received.fds)
                raise
            if received.fds:  # only an accepted Fd carries them
                request.fds = received.fds
                if (fault := descriptor_fault(request.fds)) is not None:
                    raise Refused(reason("descriptor-rights", why=fault))
            if isinstance(event, Configured):
                handshake_finished()
                return request
            if isinstance(event, DescribeAsked):  # the protocol's phase says so to the caller
                handshake_finished()
                return request
    except BaseException:
        request.close_fds()
        raise
