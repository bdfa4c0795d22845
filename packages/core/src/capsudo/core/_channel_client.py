"""The client's side of a session over any MessageChannel (trio).

Used where descriptors cannot travel as they are, such as the multiplexed
byte channel: the transport turns them into streams, and this code does not
need to know.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Awaitable, Callable

import trio

from capsudo.proto import Arg, End, Env, Error, Exit, Fd, ProtocolError, Secret, SessionKind, SessionType, Unauthorized, Winsize
from capsudo.transport import MessageChannel

from ._client_request import ClientError, ClientRequest, terminal_size
from ._password_flow import Challenged, PasswordFlow
from ._terminal import FATAL_SIGNALS, Interrupted, raw_mode
from ._unix_client import SessionResult

Connect = Callable[[], Awaitable[MessageChannel]]


async def run_channel_session(connect: Connect, request: ClientRequest, flow: PasswordFlow) -> SessionResult:
    while True:
        errors: list[str] = []
        try:
            status = await _one_connection(connect, request, flow.secret, errors)
        except Challenged as challenge:
            flow.challenged(challenge.prompt)
            continue
        if flow.finished(status, errors):
            return SessionResult(status, errors)


async def _send_request(channel: MessageChannel, request: ClientRequest, secret: bytes | None) -> None:
    if secret is not None:
        await channel.send(Secret(secret))
    for entry in request.env_entries:
        await channel.send(Env(entry))
    for value in request.argv:
        await channel.send(Arg(value))
    kind = SessionKind.INTERACTIVE if request.interactive else SessionKind.NON_INTERACTIVE
    await channel.send(SessionType(kind))
    if request.interactive and request.winsize:
        await channel.send(Winsize(*request.winsize))
    await channel.send(Fd(3), request.stdio)
    await channel.send(End())


async def _await_status(channel: MessageChannel, errors: list[str]) -> int:
    while True:
        try:
            received = await channel.receive()
        except ProtocolError as exc:
            raise ClientError(f"the daemon sent a bad reply: {exc}") from None
        except (trio.BrokenResourceError, OSError) as exc:
            raise ClientError(f"connection to the daemon lost: {exc}") from None
        if received is None:
            raise ClientError("the daemon closed the connection before sending an exit status")
        message = received.message
        if isinstance(message, Exit):
            return message.status
        if isinstance(message, Error):
            errors.append(message.text)
        elif isinstance(message, Unauthorized):
            raise Challenged(message.prompt)


async def _relay_signals(channel: MessageChannel, request: ClientRequest) -> None:
    """Window changes become Winsize messages; fatal signals end the session."""
    watched = (signal.SIGWINCH, *FATAL_SIGNALS) if request.interactive else FATAL_SIGNALS
    with trio.open_signal_receiver(*watched) as signals:
        async for signum in signals:
            if signum != signal.SIGWINCH:
                raise Interrupted(signum)
            size = terminal_size(request.stdio[1]) or terminal_size(request.stdio[0])
            if size:
                await channel.send(Winsize(*size))


async def _one_connection(connect: Connect, request: ClientRequest, secret: bytes | None, errors: list[str]) -> int:
    channel = await connect()
    async with channel:
        try:
            await _send_request(channel, request, secret)
        except (trio.BrokenResourceError, OSError) as exc:
            raise ClientError(f"connection lost during the handshake: {exc}") from None
        with raw_mode(request.stdio[0]) if request.interactive else contextlib.nullcontext():
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_relay_signals, channel, request)
                    status = await _await_status(channel, errors)
                    nursery.cancel_scope.cancel()
            except BaseExceptionGroup as group:
                # One task failed and the other was cancelled: raise that one.
                raise _first_leaf(group) from None
    return status


def _first_leaf(group: BaseExceptionGroup) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first
