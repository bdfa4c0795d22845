"""Forwarding one session from the channel it arrived on to the target endpoint.

The proxy reads the client's whole handshake first, with the same checks and
limits a daemon applies, so a bad message is refused here and never reaches
the target; only then does it connect and replay the request. Afterwards it
relays window sizes one way and the outcome the other.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from capsudo.core import Request, SessionLimits, daemon_protocol, new_session_id, read_request
from capsudo.proto import (CLIENT, MESSAGE_CLASSES, Challenged, Error, Exit, Failed, Finished, ProtocolError,
                           Refused, Resized, SessionProtocol, Unauthorized, handshake, lean, reason)
from capsudo.transport import MessageChannel, UnixChannel

_LINK_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)

#: Connects to the target for the session with the given id.
ConnectTarget = Callable[[str], Awaitable[MessageChannel]]


@dataclass
class ForwardRecord:
    """One line of the proxy's log: who came in, where it went, how it ended."""

    peer: str
    target: str
    #: Our id for the session, which a daemon of ours behind a Unix socket serves it under too.
    session: str = field(default_factory=new_session_id)
    status: int | None = None
    outcome: str = "ok"
    duration: float = 0.0

    def __str__(self) -> str:
        status = "-" if self.status is None else str(self.status)
        return (f"session from {self.peer} to {self.target} status={status} "
                f"outcome={self.outcome} duration={self.duration:.3f}s id={self.session}")


async def _send_quietly(channel: MessageChannel, *messages) -> None:
    try:
        for message in messages:
            await channel.send(message)
    except _LINK_ERRORS:
        pass


async def _replay(target: MessageChannel, protocol: SessionProtocol, request: Request) -> None:
    """The client's request, as the client would have sent it, to the target."""
    for type_code, payload in handshake(request, request.secret):
        protocol.send(type_code)
        message = MESSAGE_CLASSES[type_code].from_payload(payload)
        if type_code != lean.FD:
            await target.send(message)
            continue
        await target.send(message, request.fds)
        if isinstance(target, UnixChannel):
            # The daemon holds the descriptors now; ours would hold back end-of-file.
            request.close_fds()


async def _relay_window_sizes(
    client: MessageChannel, client_protocol: SessionProtocol, target: MessageChannel, record: ForwardRecord
) -> None:
    while True:
        try:
            received = await client.receive()
            event = client_protocol.receive(received.message) if received is not None else None
        except (ProtocolError, *_LINK_ERRORS):
            received = None
        if received is None:
            if record.status is None:
                record.outcome = "client hung up"
            return
        if isinstance(event, Resized):
            await target.send(event.winsize)


def _lost(target_name: str, exc: BaseException) -> str:
    text = str(exc)
    # An ssh:// target already names itself in its errors.
    return f"capsudo-proxy: {text}" if target_name in text else f"capsudo-proxy: connection to {target_name} lost: {text}"


async def _relay_outcome(
    target: MessageChannel, protocol: SessionProtocol, client: MessageChannel, record: ForwardRecord
) -> str | None:
    """Relay replies until Exit; the error to give the client when the target failed instead."""
    while True:
        try:
            received = await target.receive()
            event = protocol.receive(received.message) if received is not None else None
        except ProtocolError as exc:
            record.outcome = f"target sent a bad reply: {exc}"
            return f"capsudo-proxy: the capability's daemon sent a bad reply: {exc}"
        except _LINK_ERRORS as exc:
            # Without this the client would only learn that its connection
            # closed early, not that the hop behind us broke, nor why.
            record.outcome = f"link to the target lost: {exc}"
            return _lost(record.target, exc)
        if received is None:
            if record.status is None:
                record.outcome = "target closed without a status"
            return None
        if isinstance(event, Failed):
            await client.send(Error(event.text))
        elif isinstance(event, Challenged):
            await client.send(Unauthorized(event.prompt))
        elif isinstance(event, Finished):
            record.status = event.status
            await client.send(Exit(event.status))
            return None


async def forward_session(
    client: MessageChannel, connect_target: ConnectTarget, target_name: str, limits: SessionLimits
) -> ForwardRecord:
    """Serve one client by forwarding it; never raises for anything a peer did."""
    record = ForwardRecord(peer=str(client.peer) if client.peer else client.description, target=target_name)
    started = time.monotonic()
    try:
        await _forward(client, connect_target, limits, record)
    finally:
        record.duration = time.monotonic() - started
        with trio.CancelScope(shield=True):
            await client.aclose()
    return record


async def _forward(client: MessageChannel, connect_target: ConnectTarget, limits: SessionLimits,
                   record: ForwardRecord) -> None:
    client_protocol = daemon_protocol(limits)
    try:
        with trio.fail_after(limits.handshake_timeout):
            request = await read_request(client, client_protocol)
    except trio.TooSlowError:
        record.outcome = "refused: handshake timed out"
        why = reason("handshake-timeout", seconds=limits.handshake_timeout)
        return await _send_quietly(client, Error(f"capsudo-proxy: {why.text}"), Exit(1))
    except (Refused, ProtocolError) as exc:
        record.outcome = f"refused: {exc}"
        return await _send_quietly(client, Error(f"capsudo-proxy: {exc}"), Exit(1))
    except _LINK_ERRORS as exc:
        record.outcome = f"connection lost during handshake: {exc}"
        return
    if request is None:
        record.outcome = "client left before End"
        return
    failure = None
    try:
        try:
            target = await connect_target(record.session)
        except Exception as exc:  # EndpointError, OSError: anything that kept us from the target
            record.outcome = f"target unreachable: {exc}"
            failure = f"capsudo-proxy: {exc}"
            return
        target_protocol = SessionProtocol(CLIENT)
        async with target:
            try:
                await _replay(target, target_protocol, request)
                async with trio.open_nursery() as nursery:

                    async def follow_client() -> None:
                        await _relay_window_sizes(client, client_protocol, target, record)
                        # The client left: dropping the target hangs its program up.
                        nursery.cancel_scope.cancel()

                    nursery.start_soon(follow_client)
                    failure = await _relay_outcome(target, target_protocol, client, record)
                    nursery.cancel_scope.cancel()
            except* _LINK_ERRORS as group:
                if record.status is None:
                    record.outcome = f"link lost: {group.exceptions[0]}"
                    failure = _lost(record.target, group.exceptions[0])
    finally:
        # Descriptors first: over a multiplexed client channel, its output
        # streams must reach their end before an Exit can follow them.
        request.close_fds()
        if failure is not None:
            await _send_quietly(client, Error(failure), Exit(1))
