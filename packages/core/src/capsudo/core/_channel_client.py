"""The client's side of a session over any MessageChannel (trio).

Used where descriptors cannot travel as they are, such as the multiplexed
byte channel over tcp://, tls:// and vsock://: the transport turns them into
streams, and this code does not need to know. `run_endpoint_session` is the
blocking entry point the command line and the library call for such
endpoints; it starts its own event loop.
"""

from __future__ import annotations

import contextlib
import os
import signal
import termios
import tty
from collections.abc import Awaitable, Callable

import trio

from capsudo.proto import CLIENT, MESSAGE_CLASSES, ProtocolError, SessionProtocol, Winsize, handshake, lean
from capsudo.transport import (EndpointError, MessageChannel, TlsOptions, connect_endpoint, describe_tls_failure,
                               find_ssl_error)

from ._client_request import ClientError, ClientRequest, terminal_size
from ._password_flow import CLOSED_BEFORE_STATUS, PasswordFlow, PasswordRequired, SecretPrompt, follow_reply
from ._fatal_signals import FATAL_SIGNALS, Interrupted
from ._terminal import leave_program_modes, raw_mode
from ._unix_client import SessionResult

Connect = Callable[[], Awaitable[MessageChannel]]


def run_endpoint_session(
    endpoint: str,
    request: ClientRequest,
    tls: TlsOptions | None = None,
    ask_secret: SecretPrompt | None = None,
    on_retry: Callable[[], None] | None = None,
) -> SessionResult:
    """Run one session on a tcp://, tls:// or vsock:// endpoint (any endpoint, in fact).

    Every failure to reach the daemon or to keep the link is a ClientError
    with one line; a TLS refusal says which side refused what.
    """

    async def connect() -> MessageChannel:
        try:
            # Our own stdio: the channel may reopen a terminal or FIFO of ours by name.
            return await connect_endpoint(endpoint, tls, own_descriptors=True)
        except EndpointError as exc:
            raise ClientError(str(exc)) from None
        except ValueError as exc:
            raise ClientError(str(exc)) from None

    return trio.run(run_channel_session, connect, request, PasswordFlow(ask_secret, on_retry))


def _link_failure(what: str, exc: BaseException) -> ClientError:
    """One line for a link that broke; a TLS alert from the daemon is named as such.

    Under TLS 1.3 the server checks our certificate after our side of the
    handshake is done, so its refusal arrives here, on the first read or write.
    """
    if getattr(exc, "before_connecting", False):
        return ClientError(str(exc))  # it says why the daemon was never reached
    if find_ssl_error(exc) is not None:
        return ClientError(f"the daemon refused the TLS connection: {describe_tls_failure(exc, server_side=False)}")
    reason = exc.__cause__ if isinstance(exc, trio.BrokenResourceError) and exc.__cause__ else exc
    text = getattr(reason, "strerror", None) or str(reason) or type(reason).__name__
    return ClientError(f"{what}: {text}")


async def run_channel_session(connect: Connect, request: ClientRequest, flow: PasswordFlow,
                              watch_signals: bool = True) -> SessionResult:
    """The session, reconnecting as the password flow says.

    `watch_signals` relays window changes and ends the session on a fatal
    signal, as a command does; a library call (any thread) watches none.
    """
    while True:
        errors: list[str] = []
        try:
            status = await _one_connection(connect, request, flow.secret, errors, watch_signals)
        except PasswordRequired as challenge:
            flow.challenged(challenge.prompt)
            continue
        if flow.finished(status, errors):
            return SessionResult(status, errors)


async def _send_request(
    channel: MessageChannel, protocol: SessionProtocol, request: ClientRequest, secret: bytes | None
) -> None:
    for type_code, payload in handshake(request, secret):
        protocol.send(type_code)
        message = MESSAGE_CLASSES[type_code].from_payload(payload)
        await channel.send(message, request.stdio if type_code == lean.FD else ())


async def _await_status(channel: MessageChannel, protocol: SessionProtocol, errors: list[str]) -> int:
    while True:
        try:
            received = await channel.receive()
        except ProtocolError as exc:
            raise ClientError(f"the daemon sent a bad reply: {exc}") from None
        except (trio.BrokenResourceError, OSError) as exc:
            raise _link_failure("connection to the daemon lost", exc) from None
        if received is None:
            raise ClientError(CLOSED_BEFORE_STATUS)
        status = follow_reply(protocol, errors, received.message)
        if status is not None:
            return status


async def _relay_signals(channel: MessageChannel, protocol: SessionProtocol, request: ClientRequest) -> None:
    """Window changes become Winsize messages; fatal signals end the session.

    A client stopped and continued (SIGSTOP, then `fg`) finds the terminal as
    its shell left it, cooked: on SIGCONT it goes raw again, when it is in
    the foreground, and sends the window's size, which may have changed.
    """
    watched = (signal.SIGWINCH, signal.SIGCONT, *FATAL_SIGNALS) if request.interactive else FATAL_SIGNALS
    sent = request.winsize

    async def send_size() -> None:
        nonlocal sent
        size = terminal_size(request.stdio[1]) or terminal_size(request.stdio[0])
        if size and size != sent:
            protocol.send(Winsize.type)
            await channel.send(Winsize(*size))
            sent = size

    with trio.open_signal_receiver(*watched) as signals:
        if request.interactive:
            await send_size()  # a resize between the handshake and now would go unseen
        async for signum in signals:
            if signum == signal.SIGCONT:
                _raw_again(request.stdio[0])
            elif signum != signal.SIGWINCH:
                raise Interrupted(signum)
            await send_size()


def _raw_again(fd: int) -> None:
    try:
        # In the background, setting it would only stop us again; the `fg`
        # that follows sends another SIGCONT.
        if os.tcgetpgrp(fd) == os.getpgrp():
            tty.setraw(fd, termios.TCSANOW)
    except (OSError, termios.error):
        pass  # the terminal is gone: nothing to set


async def _one_connection(connect: Connect, request: ClientRequest, secret: bytes | None, errors: list[str],
                          watch_signals: bool = True) -> int:
    channel = await connect()
    protocol = SessionProtocol(CLIENT)
    async with channel:
        # Raw before the descriptors leave: the program may read the terminal
        # the moment it starts, and keys typed then must not meet cooked mode.
        # A password challenge leaves this block, and the terminal restored,
        # before the secret is asked for.
        with raw_mode(request.stdio[0]) if request.interactive else contextlib.nullcontext():
            try:
                await _send_request(channel, protocol, request, secret)
            except (trio.BrokenResourceError, OSError) as exc:
                raise _link_failure("connection lost during the handshake", exc) from None
            if not watch_signals:
                return await _await_status(channel, protocol, errors)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_relay_signals, channel, protocol, request)
                    status = await _await_status(channel, protocol, errors)
                    nursery.cancel_scope.cancel()
            except BaseExceptionGroup as group:
                # One task failed and the other was cancelled: raise that one.
                failure = _first_leaf(group)
                if request.interactive and isinstance(failure, ClientError):
                    leave_program_modes(request.stdio[1])  # the program died with its daemon
                raise failure from None
    return status


def _first_leaf(group: BaseExceptionGroup) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first
