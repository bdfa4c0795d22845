"""The session protocol as a pure object: who may send what, when, and what it means.

A session is one conversation on one connection. The client configures it
(Secret, Env, Arg, SessionType, Winsize, Fd, in any order) and closes the
configuration with End; from then on its program may run, and the client
may only resize its window. The daemon answers with Error lines and exactly
one Exit; a password front-end answers Unauthorized instead, and the
connection ends there. Each of these rules is one entry of `RULES`, and
every party to a session (the daemon, both client drivers, the proxy, the
password front-end) drives a `SessionProtocol` instead of restating one.

Like h11's Connection it does no I/O: messages in, events out. Messages
arrive as a type code and payload bytes, the form every transport gives
cheaply (the blocking client never builds message objects), or as a
decoded message, whose fields the daemon side reads. Nothing here imports
more than `lean`, because the one-shot client loads this module at start-up.
"""

from __future__ import annotations

from . import lean
from ._errors import ProtocolError

TYPE_CHECKING = False  # typing costs the one-shot client start-up time
if TYPE_CHECKING:
    from collections.abc import Iterator

CLIENT = "client"
DAEMON = "daemon"

CONFIGURING = "configuring"
RUNNING = "running"
CHALLENGED = "challenged"
FINISHED = "finished"

#: (who sends, in which phase, which message) -> (the phase after it, what it means).
#: What it means names a method `_on_<meaning>` of SessionProtocol, which
#: applies the message and may return an event for the driver.
RULES: dict[tuple[str, str, int], tuple[str, str]] = {
    (CLIENT, CONFIGURING, lean.SECRET): (CONFIGURING, "secret"),
    (CLIENT, CONFIGURING, lean.ENV): (CONFIGURING, "env"),
    (CLIENT, CONFIGURING, lean.ARG): (CONFIGURING, "arg"),
    (CLIENT, CONFIGURING, lean.SESSION_TYPE): (CONFIGURING, "session_type"),
    (CLIENT, CONFIGURING, lean.WINSIZE): (CONFIGURING, "winsize"),
    (CLIENT, CONFIGURING, lean.FD): (CONFIGURING, "fd"),
    (CLIENT, CONFIGURING, lean.END): (RUNNING, "end"),
    (CLIENT, RUNNING, lean.WINSIZE): (RUNNING, "resize"),
    # The daemon may refuse before End (a busy daemon turns a client away
    # while it is still sending), or after it.
    (DAEMON, CONFIGURING, lean.ERROR): (CONFIGURING, "error"),
    (DAEMON, CONFIGURING, lean.EXIT): (FINISHED, "exit"),
    (DAEMON, CONFIGURING, lean.UNAUTHORIZED): (CHALLENGED, "challenge"),
    (DAEMON, RUNNING, lean.ERROR): (RUNNING, "error"),
    (DAEMON, RUNNING, lean.EXIT): (FINISHED, "exit"),
    (DAEMON, RUNNING, lean.UNAUTHORIZED): (CHALLENGED, "challenge"),
}

#: Where a message without a rule breaks the session. Elsewhere it is
#: ignored: after End a daemon reads only window sizes, and a client acts
#: only on what a daemon may send.
STRICT = frozenset({(CLIENT, CONFIGURING)})

#: The order a client sends its configuration in (protocol.md, "Handshake").
HANDSHAKE_ORDER = (lean.SECRET, lean.ENV, lean.ARG, lean.SESSION_TYPE, lean.WINSIZE, lean.FD, lean.END)

STDIO_COUNT = 3


class Reason:
    """Why a session was refused: a code for programs, a text for people.

    The wire carries only the text (an Error message); the code is what our
    own code compares, and `REASONS` holds the one wording of each.
    """

    __slots__ = ("code", "text")

    def __init__(self, code: str, text: str) -> None:
        self.code = code
        self.text = text

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Reason) and (self.code, self.text) == (other.code, other.text)

    def __hash__(self) -> int:
        return hash((self.code, self.text))

    def __repr__(self) -> str:
        return f"Reason({self.code!r}, {self.text!r})"


REASONS = {
    "too-many-messages": "too many messages before End (limit {limit})",
    "too-many-items": "too many arguments and environment entries (limit {limit})",
    "too-large": "the messages before End exceed {limit} bytes",
    "descriptors-twice": "descriptors were delegated twice",
    "descriptor-count": "expected 3 descriptors (stdin, stdout, stderr), got {count}",
    "no-descriptors": "no descriptors were delegated before End",
    "descriptor-rights": "{why}",
    "not-now": "a client may not send {name}",
    "handshake-timeout": "handshake not completed within {seconds:g}s",
    "busy": "too many sessions (limit {limit}); try again later",
    "secret-invalid": "secret invalid",
    "cannot-run": "unable to run {program}: {why}",
    "dropped": "this endpoint ignores {what}, and refuses a request that has them",
}


#: An Error whose text starts so, sent just before the Exit of a session that ran, is a notice, not a failure:
#: every client shows an Error's text, and ours shows this one as a note.
NOTE_PREFIX = "note: "


def reason(code: str, **fields: object) -> Reason:
    return Reason(code, REASONS[code].format(**fields))


def reason_of(text: str) -> Reason | None:
    """The reason an Error text states, for those that have one fixed wording."""
    for code, template in REASONS.items():
        if "{" not in template and template == text:
            return Reason(code, text)
    return None


class Refused(Exception):
    """The peer's configuration cannot be accepted; `reason.text` goes back to it."""

    def __init__(self, reason: Reason) -> None:
        super().__init__(reason.text)
        self.reason = reason


class HandshakeLimits:
    """What one client may send before End."""

    __slots__ = ("max_items", "max_bytes", "max_messages")

    def __init__(self, max_items: int = 65536, max_bytes: int = 4 * 1024 * 1024, max_messages: int = 131072) -> None:
        # Arguments plus environment entries: far above what execve accepts
        # in practice (its total is 2 MiB on Linux), so only a hostile client
        # reaches them. The message count bounds a stream of repeated Winsize.
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.max_messages = max_messages


class Request:
    """What a client asked for, before the daemon's attenuation.

    The protocol fills it in as the configuration arrives; the descriptors
    themselves are the driver's (it receives and closes them).
    """

    __slots__ = ("argv", "env_entries", "interactive", "winsize", "fds", "secret")

    def __init__(self) -> None:
        self.argv: list[str] = []
        self.env_entries: list[str] = []
        self.interactive = False
        self.winsize = None
        self.fds: list[int] = []
        # Kept only so a proxy can pass it on to a front-end; a daemon ignores it.
        self.secret: bytes | None = None


# Events: what a received message means to the driver.


class Configured:
    """End arrived: the request is whole."""

    __slots__ = ("request",)

    def __init__(self, request: Request) -> None:
        self.request = request


class Resized:
    """The client's window changed (after End)."""

    __slots__ = ("winsize",)

    def __init__(self, winsize) -> None:
        self.winsize = winsize


class Failed:
    """The daemon explains a failure (an Error line)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


class Challenged:
    """A front-end asks for the password with this prompt."""

    __slots__ = ("prompt",)

    def __init__(self, prompt: str) -> None:
        self.prompt = prompt


class Finished:
    """The session's outcome: the program's status."""

    __slots__ = ("status",)

    def __init__(self, status: int) -> None:
        self.status = status


def _name(type_code: int) -> str:
    return lean.NAMES.get(type_code, f"message type {type_code}")


class SessionProtocol:
    """One party's view of one session.

    `our_role` is CLIENT or DAEMON. `receive()` takes what the peer sent and
    returns an event (or None); `send()` is told what we are about to send,
    so a driver cannot break the order either. A subclass may extend
    `RULES` (and add the `_on_` methods its new entries name): drivers handle
    what it returns without knowing the message.
    """

    RULES = RULES
    STRICT = STRICT
    #: Type code -> message class, for typed decoders; None for the contract's own.
    MESSAGE_CLASSES = None

    def __init__(self, our_role: str, limits: HandshakeLimits | None = None, request: Request | None = None) -> None:
        self.our_role = our_role
        self.peer_role = DAEMON if our_role == CLIENT else CLIENT
        self.phase = CONFIGURING
        self.limits = limits or HandshakeLimits()
        self.request = request if request is not None else Request()
        self._items = self._bytes = self._messages = 0
        self._delegated = False

    @classmethod
    def message_types(cls) -> frozenset[int]:
        """Every type code the table knows, for decoders that refuse the rest."""
        return frozenset(code for _, _, code in cls.RULES)

    def receive(self, message=None, *, type_code: int | None = None, payload: bytes = b""):
        """Apply one message from the peer: a decoded message, or its type code and payload.

        Raises Refused for a request that cannot be accepted and
        ProtocolError for a message the phase does not allow.
        """
        if message is not None:
            type_code = message.type
        assert type_code is not None
        sender = self.peer_role
        rule = self.RULES.get((sender, self.phase, type_code))
        if rule is None:
            if (sender, self.phase) in self.STRICT:
                raise ProtocolError(reason("not-now", name=_name(type_code)).text)
            return None
        if self.phase == CONFIGURING and sender == CLIENT:
            self._count(type_code, message, payload)
        then, meaning = rule
        event = getattr(self, f"_on_{meaning}")(message, payload)
        self.phase = then
        return event

    def send(self, type_code: int) -> None:
        """Note that we send this message; raises ProtocolError when its phase does not allow it."""
        rule = self.RULES.get((self.our_role, self.phase, type_code))
        if rule is None:
            raise ProtocolError(f"a {self.our_role} may not send {_name(type_code)} while {self.phase}")
        self.phase = rule[0]

    def _count(self, type_code: int, message, payload: bytes) -> None:
        limits = self.limits
        self._messages += 1
        if self._messages > limits.max_messages:
            raise Refused(reason("too-many-messages", limit=limits.max_messages))
        # Every message before End counts, a Secret as much as an Arg:
        # whatever a connection holds before End is bounded by max_bytes.
        self._bytes += len(message.payload() if message is not None else payload)
        if self._bytes > limits.max_bytes:
            raise Refused(reason("too-large", limit=limits.max_bytes))
        if type_code in (lean.ARG, lean.ENV):
            self._items += 1
            if self._items > limits.max_items:
                raise Refused(reason("too-many-items", limit=limits.max_items))

    # What each message means to the daemon (a decoded message).

    def _on_secret(self, message, payload):
        self.request.secret = message.secret

    def _on_env(self, message, payload):
        self.request.env_entries.append(message.entry)

    def _on_arg(self, message, payload):
        self.request.argv.append(message.value)

    def _on_session_type(self, message, payload):
        # Auto is for the client to resolve; a daemon has no terminal to look at.
        self.request.interactive = message.kind == lean.INTERACTIVE

    def _on_winsize(self, message, payload):
        self.request.winsize = message

    def _on_fd(self, message, payload):
        # The descriptors themselves are the driver's to attach (and to close).
        if self._delegated:
            raise Refused(reason("descriptors-twice"))
        if message.count != STDIO_COUNT:
            raise Refused(reason("descriptor-count", count=message.count))
        self._delegated = True

    def _on_end(self, message, payload):
        if not self._delegated:
            raise Refused(reason("no-descriptors"))
        return Configured(self.request)

    def _on_resize(self, message, payload):
        return Resized(message)

    # What each message means to the client (its payload, or a decoded message).

    def _on_error(self, message, payload):
        return Failed(message.text if message is not None else lean.text(payload))

    def _on_exit(self, message, payload):
        return Finished(message.status if message is not None else lean.exit_status(payload))

    def _on_challenge(self, message, payload):
        return Challenged(message.prompt if message is not None else lean.text(payload))


def handshake(request, secret: bytes | None) -> Iterator[tuple[int, bytes]]:
    """A client's configuration as (type code, payload), in the order of HANDSHAKE_ORDER.

    `request` has argv, env_entries, interactive and winsize (a 4-tuple or
    a Winsize); the descriptors go with the FD entry.
    """
    if secret is not None:
        yield lean.SECRET, secret
    for entry in request.env_entries:
        yield lean.ENV, entry.encode()
    for value in request.argv:
        yield lean.ARG, value.encode()
    yield lean.SESSION_TYPE, lean.session_type_payload(lean.INTERACTIVE if request.interactive else lean.NON_INTERACTIVE)
    if request.interactive and request.winsize:
        yield lean.WINSIZE, lean.winsize_payload(*request.winsize)
    yield lean.FD, lean.fd_payload(STDIO_COUNT)
    yield lean.END, b""


# The describe extension (docs/protocol.md, "Extensions"): a connection of its
# own that carries Describe (after a Secret, behind a password front-end) and
# gets one Description back, or a reference peer's refusal.

DESCRIBING = "describing"

REASONS["describe-alone"] = "Describe must be alone on its connection (a Secret may precede it)"


class DescribeAsked:
    """A client asked what the endpoint does."""

    __slots__ = ()


class Described:
    """The endpoint's description, as the daemon sent it (a JSON object)."""

    __slots__ = ("fields",)

    def __init__(self, fields: dict) -> None:
        self.fields = fields


class DescribingProtocol(SessionProtocol):
    """The session protocol, and the describe extension: what our daemon and `capsudo -l` speak."""

    RULES = {
        **RULES,
        (CLIENT, CONFIGURING, lean.DESCRIBE): (DESCRIBING, "describe"),
        (DAEMON, DESCRIBING, lean.DESCRIPTION): (FINISHED, "description"),
        (DAEMON, DESCRIBING, lean.ERROR): (DESCRIBING, "error"),
        (DAEMON, DESCRIBING, lean.EXIT): (FINISHED, "exit"),
        (DAEMON, DESCRIBING, lean.UNAUTHORIZED): (CHALLENGED, "challenge"),
    }
    # Nothing may follow a Describe: the daemon answers and closes.
    STRICT = STRICT | {(CLIENT, DESCRIBING)}

    def _on_describe(self, message, payload):
        alone = self._messages == 1 or (self._messages == 2 and self.request.secret is not None)
        if not alone:
            raise Refused(reason("describe-alone"))
        return DescribeAsked()

    def _on_description(self, message, payload):
        if message is None:
            from ._messages import Description

            message = Description.from_payload(payload)
        return Described(message.fields)
