"""The client's side of a session over a local Unix socket, without an event loop.

The client hands its descriptors to the daemon and waits for the status:
the program writes straight into them. Standard library only, because this
runs at the start of every command.
"""

from __future__ import annotations

from capsudo.proto import CLIENT, ProtocolError, SessionProtocol, handshake, lean
from capsudo.transport import BlockingUnixConnection

from ._client_request import ClientError, ClientRequest, terminal_size
from ._password_flow import CLOSED_BEFORE_STATUS, PasswordFlow, PasswordRequired, SecretPrompt, follow_reply

TYPE_CHECKING = False  # typing and collections cost the client start-up time
if TYPE_CHECKING:
    from collections.abc import Callable


class SessionResult:
    """A session's exit status and the daemon's error texts, in order.

    A plain class for the reason given on ClientRequest.
    """

    __slots__ = ("status", "errors")

    def __init__(self, status: int, errors: list[str] | None = None) -> None:
        self.status = status
        self.errors = [] if errors is None else errors

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SessionResult):
            return NotImplemented
        return (self.status, self.errors) == (other.status, other.errors)

    def __repr__(self) -> str:
        return f"SessionResult(status={self.status!r}, errors={self.errors!r})"


def _handshake(protocol: SessionProtocol, request: ClientRequest, secret: bytes | None) -> tuple[bytes, bytes]:
    """The configuration's bytes: what goes before the descriptors, and the
    message that carries them with End."""
    before = []
    carrying = []
    for type_code, payload in handshake(request, secret):
        protocol.send(type_code)
        (carrying if type_code in (lean.FD, lean.END) else before).append(lean.message(type_code, payload))
    return b"".join(before), b"".join(carrying)


def _connect(path: str, protocol: SessionProtocol) -> BlockingUnixConnection:
    try:
        return BlockingUnixConnection(path, protocol.message_types())
    except OSError as exc:
        from capsudo.transport import unix_connect_failure  # only on a failure: it costs start-up time

        raise ClientError(unix_connect_failure(path, exc)) from None


class _Answered(Exception):
    """The far end stopped reading the request; what it said may still be read."""


def _one_connection(
    path: str, request: ClientRequest, secret: bytes | None, errors: list[str], protocol: SessionProtocol
) -> int:
    with _connect(path, protocol) as connection:
        try:
            if not request.interactive:
                _send_request(path, connection, protocol, request, secret)
                return _await_status(connection, protocol, errors)
            return _interactive_session(path, connection, protocol, request, secret, errors)
        except _Answered as cut:
            try:
                return _await_status(connection, protocol, errors)
            except ClientError:  # it closed without a word: the failure itself is the news
                raise ClientError(str(cut)) from None


def _send_request(
    path: str, connection: BlockingUnixConnection, protocol: SessionProtocol, request: ClientRequest, secret: bytes | None
) -> None:
    before, carrying = _handshake(protocol, request, secret)
    try:
        connection.send(before)
        # The descriptors ride alone on the Fd message, so the daemon can
        # tell which message carried them.
        connection.send(carrying, request.stdio)
    except OSError as exc:
        failure = f"connection to {path} failed during the handshake: {exc.strerror or exc}"
        if isinstance(exc, (BrokenPipeError, ConnectionResetError)):
            # A far end that refuses at once (too busy, a request too large)
            # answers and closes without reading the rest: its reason is
            # waiting in the socket, and is worth more than "broken pipe".
            raise _Answered(failure) from None
        raise ClientError(failure) from None


def _interactive_session(
    path: str,
    connection: BlockingUnixConnection,
    protocol: SessionProtocol,
    request: ClientRequest,
    secret: bytes | None,
    errors: list[str],
) -> int:
    # Imported here: contextlib (and the collections it pulls in) and the
    # terminal are for interactive sessions only.
    import contextlib

    from ._fatal_signals import stop_on_signals
    from ._terminal import leave_program_modes, on_window_change, raw_mode

    sent = request.winsize
    request_sent = False

    def send_size(always: bool = False) -> None:
        nonlocal sent
        if not request_sent:
            return  # a message now would land inside the handshake
        size = terminal_size(request.stdio[1]) or terminal_size(request.stdio[0])
        if size and (always or size != sent):
            # After the outcome a resize has nowhere to go (the protocol says so).
            with contextlib.suppress(OSError, ProtocolError):
                protocol.send(lean.WINSIZE)
                connection.send(lean.winsize(*size))
                sent = size

    # Raw before the descriptors leave: the program may write (and read) the
    # moment it starts, and must never meet the terminal in cooked mode.
    # A password challenge leaves this block, and the terminal restored,
    # before the secret is asked for.
    def continued() -> None:
        # Sent even when unchanged: to a daemon whose program stopped with
        # us (^Z), a Winsize after the stop is the word to continue it.
        send_size(always=True)

    with stop_on_signals(), raw_mode(request.stdio[0], on_continue=continued):
        _send_request(path, connection, protocol, request, secret)
        request_sent = True
        with on_window_change(send_size):
            send_size()  # a resize between the handshake and now would go unseen
            try:
                return _await_status(connection, protocol, errors)
            except ClientError:
                leave_program_modes(request.stdio[1])  # the program died with its daemon
                raise


def _await_status(connection: BlockingUnixConnection, protocol: SessionProtocol, errors: list[str]) -> int:
    while True:
        try:
            reply = connection.receive()
        except ProtocolError as exc:
            raise ClientError(f"the daemon sent a bad reply: {exc}") from None
        except OSError as exc:
            raise ClientError(f"connection to the daemon lost: {exc.strerror or exc}") from None
        if reply is None:
            raise ClientError(CLOSED_BEFORE_STATUS)
        status = follow_reply(protocol, errors, type_code=reply[0], payload=reply[1])
        if status is not None:
            return status


def run_unix_session(
    path: str,
    request: ClientRequest,
    ask_secret: SecretPrompt | None = None,
    on_retry: Callable[[], None] | None = None,
    protocol: type[SessionProtocol] = SessionProtocol,
) -> SessionResult:
    """Run one session on a Unix endpoint and return its status and errors.

    On Unauthorized, asks for the secret and reconnects with it first; a
    refused secret is asked again (after `on_retry`), three tries in all.
    `protocol` is the session protocol to follow (a subclass may know more).
    """
    flow = PasswordFlow(ask_secret, on_retry)
    while True:
        errors: list[str] = []
        try:
            status = _one_connection(path, request, flow.secret, errors, protocol(CLIENT))
        except PasswordRequired as challenge:
            flow.challenged(challenge.prompt)
            continue
        if flow.finished(status, errors):
            return SessionResult(status, errors)
