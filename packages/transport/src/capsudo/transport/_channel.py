"""The interface every transport offers the session layer."""

from __future__ import annotations

import abc
import os
from collections.abc import Sequence
from typing import NamedTuple

from capsudo.proto import Message

from ._credentials import PeerCredentials


class Received(NamedTuple):
    """A control message and the descriptors that came with it (the caller closes them)."""

    message: Message
    fds: list[int]


class MessageChannel(abc.ABC):
    """A connection that carries control messages and delegated descriptors.

    Over a Unix socket the descriptors are real (SCM_RIGHTS); over a byte
    channel they are simulated. Sessions never learn which.
    """

    #: The kernel's word on who the peer is; None where the transport cannot tell.
    peer: PeerCredentials | None = None
    #: Where the peer is, for logs: a path, an address.
    description: str = "?"
    #: Who the peer is, for limits per peer: "uid 1000" on a Unix socket, the
    #: remote address on tcp://, the certificate's subject on tls://, the
    #: context id on vsock://; None where the transport cannot tell.
    source: str | None = None

    def limit_handshake(self, max_bytes: int | None) -> None:
        """Cap what the peer may send in control messages before End at `max_bytes` in all.

        Counted from the connection's start, whatever the messages' types;
        a header announcing more than what is left is refused (ProtocolError
        from receive()) before its payload is read or buffered. None lifts
        the cap. A channel that cannot cap its reads ignores this, and the
        handshake's own count still refuses the excess once received.
        """

    @abc.abstractmethod
    async def send(self, message: Message, fds: Sequence[int] = ()) -> None:
        """Send one message; `fds` go with an Fd message only."""

    @abc.abstractmethod
    async def receive(self) -> Received | None:
        """The next message, or None when the peer closed cleanly between messages.

        Raises ProtocolError for bytes that break the contract, and
        trio.BrokenResourceError when the link fails.
        """

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Close the connection; safe to call more than once."""

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.aclose()


def close_fds(fds: Sequence[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
