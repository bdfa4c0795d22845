"""The client's side of a session over a local Unix socket, without an event loop.

The client hands its descriptors to the daemon and waits for the status:
the program writes straight into them. Standard library only, because this
runs at the start of every command.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

from capsudo.proto import ProtocolError, lean
from capsudo.transport import BlockingUnixConnection

from ._client_request import MAX_SECRET_ATTEMPTS, SECRET_REFUSED, ClientError, ClientRequest, terminal_size

SecretPrompt = Callable[[str], bytes]


@dataclass
class SessionResult:
    status: int
    errors: list[str] = field(default_factory=list)


def _handshake(request: ClientRequest, secret: bytes | None) -> bytes:
    parts = [lean.secret(secret)] if secret is not None else []
    parts += [lean.env(entry) for entry in request.env_entries]
    parts += [lean.arg(value) for value in request.argv]
    parts.append(lean.session_type(lean.INTERACTIVE if request.interactive else lean.NON_INTERACTIVE))
    if request.interactive and request.winsize:
        parts.append(lean.winsize(*request.winsize))
    return b"".join(parts)


def _connect(path: str) -> BlockingUnixConnection:
    try:
        return BlockingUnixConnection(path)
    except OSError as exc:
        raise ClientError(f"cannot connect to {path}: {exc.strerror or exc}") from None


class _Unauthorized(Exception):
    def __init__(self, prompt: str) -> None:
        self.prompt = prompt


def _one_connection(path: str, request: ClientRequest, secret: bytes | None, errors: list[str]) -> int:
    with _connect(path) as connection:
        try:
            connection.send(_handshake(request, secret))
            # The descriptors ride alone on the Fd message, so the daemon can
            # tell which message carried them.
            connection.send(lean.fd(3) + lean.end(), request.stdio)
        except OSError as exc:
            raise ClientError(f"connection to {path} failed during the handshake: {exc.strerror or exc}") from None
        with _interactive(request, connection):
            return _await_status(connection, errors)


@contextlib.contextmanager
def _interactive(request: ClientRequest, connection: BlockingUnixConnection):
    if not request.interactive:
        yield
        return
    from ._terminal import on_window_change, raw_mode, stop_on_signals

    def send_size() -> None:
        size = terminal_size(request.stdio[1]) or terminal_size(request.stdio[0])
        if size:
            with contextlib.suppress(OSError):
                connection.send(lean.winsize(*size))

    with stop_on_signals(), raw_mode(request.stdio[0]), on_window_change(send_size):
        yield


def _await_status(connection: BlockingUnixConnection, errors: list[str]) -> int:
    while True:
        try:
            reply = connection.receive()
        except ProtocolError as exc:
            raise ClientError(f"the daemon sent a bad reply: {exc}") from None
        except OSError as exc:
            raise ClientError(f"connection to the daemon lost: {exc.strerror or exc}") from None
        if reply is None:
            raise ClientError("the daemon closed the connection before sending an exit status")
        type_code, payload = reply
        if type_code == lean.EXIT:
            return lean.exit_status(payload)
        if type_code == lean.ERROR:
            errors.append(lean.text(payload))
        elif type_code == lean.UNAUTHORIZED:
            raise _Unauthorized(lean.text(payload))
        # Anything else from a daemon is ignored: it carries nothing we act on.


def run_unix_session(
    path: str, request: ClientRequest, ask_secret: SecretPrompt | None = None, on_retry: Callable[[], None] | None = None
) -> SessionResult:
    """Run one session on a Unix endpoint and return its status and errors.

    On Unauthorized, asks for the secret and reconnects with it first; a
    refused secret is asked again (after `on_retry`), three tries in all.
    """
    secret: bytes | None = None
    prompt = ""
    attempts = 0
    while True:
        errors: list[str] = []
        try:
            status = _one_connection(path, request, secret, errors)
        except _Unauthorized as challenge:
            if ask_secret is None:
                raise ClientError("the endpoint asks for a password, and there is no way to ask for one") from None
            if secret is not None:
                raise ClientError("the endpoint refused the password without checking it") from None
            prompt = challenge.prompt
        else:
            refused = secret is not None and errors == [SECRET_REFUSED]
            if not refused:
                return SessionResult(status, errors)
            if attempts >= MAX_SECRET_ATTEMPTS:
                raise ClientError(f"{MAX_SECRET_ATTEMPTS} incorrect password attempts")
            if on_retry is not None:
                on_retry()
        assert ask_secret is not None
        secret = ask_secret(prompt)
        attempts += 1
