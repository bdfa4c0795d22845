"""What the client does with the daemon's replies, and its password flow: shared by both drivers.

Every reply goes through the session protocol (`follow_reply`): Error lines
are collected, Exit is the status, Unauthorized a challenge. A front-end
answers a first connection with Unauthorized; the client asks for the
secret and reconnects with it first. A refused secret is asked for again,
three tries in all, like sudo.
"""

from __future__ import annotations

from capsudo.proto import Challenged, Failed, Finished, ProtocolError, reason_of

from ._client_request import MAX_SECRET_ATTEMPTS, ClientError

TYPE_CHECKING = False  # collections costs the one-shot client start-up time
if TYPE_CHECKING:
    from collections.abc import Callable

SecretPrompt = "Callable[[str], bytes]"

CLOSED_BEFORE_STATUS = "the daemon closed the connection before sending an exit status"


def follow_reply(protocol, errors: list[str], message=None, *, type_code: int | None = None, payload: bytes = b""):
    """One reply from the daemon, a decoded message or its type code and payload.

    Returns the session's status once it comes (else None), collects Error
    lines into `errors`, raises PasswordRequired for a challenge and
    ClientError for a reply the protocol does not allow.
    """
    try:
        event = protocol.receive(message, type_code=type_code, payload=payload)
    except ProtocolError as exc:
        raise ClientError(f"the daemon sent a bad reply: {exc}") from None
    if isinstance(event, Finished):
        return event.status
    if isinstance(event, Failed):
        errors.append(event.text)
    elif isinstance(event, Challenged):
        raise PasswordRequired(event.prompt)
    return None


class PasswordRequired(Exception):
    """The endpoint answered Unauthorized with this prompt."""

    def __init__(self, prompt: str) -> None:
        super().__init__(prompt)
        self.prompt = prompt


class PasswordFlow:
    """What to do after each connection: finish, or reconnect with a secret."""

    def __init__(self, ask_secret: Callable[[str], bytes] | None, on_retry: Callable[[], None] | None = None) -> None:
        self._ask_secret = ask_secret
        self._on_retry = on_retry
        self._prompt = ""
        self._attempts = 0
        self.secret: bytes | None = None

    def challenged(self, prompt: str) -> None:
        """Unauthorized arrived: ask for the secret to send next time."""
        if self._ask_secret is None:
            raise ClientError("the endpoint asks for a password, and there is no way to ask for one")
        if self.secret is not None:
            raise ClientError("the endpoint refused the password without checking it")
        self._prompt = prompt
        self._ask()

    def finished(self, status: int, errors: list[str]) -> bool:
        """A connection ended with a status; False means reconnect with a new secret."""
        if self.secret is None or len(errors) != 1 or getattr(reason_of(errors[0]), "code", None) != "secret-invalid":
            return True
        if self._attempts >= MAX_SECRET_ATTEMPTS:
            raise ClientError(f"{MAX_SECRET_ATTEMPTS} incorrect password attempts")
        if self._on_retry is not None:
            self._on_retry()
        self._ask()
        return False

    def _ask(self) -> None:
        assert self._ask_secret is not None
        self.secret = self._ask_secret(self._prompt)
        self._attempts += 1
