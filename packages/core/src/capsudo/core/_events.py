"""What happens to a session, as typed events that carry its id, for whoever listens.

A daemon reports five moments of every session to a sink (any callable
taking an event): accepted, requested, decided, started, ended; a session
that waits for a person's approval is pending between requested and decided. A session
refused during its handshake goes from accepted straight to ended. The log
line a person reads on stderr is one sink among others (`SessionRecord`);
an audit trail is another.
"""

from __future__ import annotations

import secrets
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from capsudo.proto import Reason
from capsudo.transport import PeerCredentials


def new_session_id() -> str:
    """An id no client can guess or choose: 64 random bits, as 16 hex digits."""
    return secrets.token_hex(8)


@dataclass(frozen=True, slots=True)
class Accepted:
    session: str
    peer: PeerCredentials | None
    #: Where the peer is, for people: a path, an address.
    where: str
    time: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class Requested:
    """What the client asked for, before any attenuation (environment values withheld)."""

    session: str
    argv: tuple[str, ...]
    env_names: tuple[str, ...]
    interactive: bool
    time: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class Decided:
    """What the endpoint's decision made of it: what will run, or why nothing will."""

    session: str
    allowed: bool
    argv: tuple[str, ...] = ()
    env_names: tuple[str, ...] = ()
    reason: Reason | None = None
    #: What the audit calls it, when more than allowed or refused: "approved", "denied", "timed out", "withdrawn".
    decision: str | None = None
    #: Who decided, when a person did.
    approver: str | None = None
    #: What of the request the endpoint's pins leave out (arguments, environment names).
    dropped_argv: tuple[str, ...] = ()
    dropped_env_names: tuple[str, ...] = ()
    time: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class Pending:
    """The request waits for a person's decision, under this request id, until `deadline` (wall clock)."""

    session: str
    request: str
    deadline: float
    time: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class Started:
    session: str
    pid: int
    executable: str
    argv: tuple[str, ...]
    time: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class Ended:
    session: str
    #: The program's status (128 + N for signal N), or the refusal's; None when nobody got one.
    status: int | None
    #: How it ended, for people: "ok", "refused: …", "client hung up", ….
    outcome: str
    duration: float
    time: float = field(default_factory=time.time)


SessionEvent = Accepted | Requested | Pending | Decided | Started | Ended
EventSink = Callable[[SessionEvent], None]


def env_names(entries: Sequence[str]) -> tuple[str, ...]:
    return tuple(entry.partition("=")[0] for entry in entries)


class SessionRecord:
    """One line of the daemon's log per session, made from its events.

    `session PEER argv='…' status=N outcome=… duration=…s`: who ran what,
    and how it ended.
    """

    def __init__(self) -> None:
        self.peer = "?"
        self.argv: list[str] | None = None
        self.status: int | None = None
        self.outcome = "ok"
        self.duration = 0.0

    def __call__(self, event: SessionEvent) -> None:
        if isinstance(event, Accepted):
            self.peer = str(event.peer) if event.peer else event.where
        elif isinstance(event, Decided) and event.allowed:
            self.argv = list(event.argv)
        elif isinstance(event, Ended):
            self.status, self.outcome, self.duration = event.status, event.outcome, event.duration

    def __str__(self) -> str:
        command = shlex.join(self.argv) if self.argv is not None else "-"
        status = "-" if self.status is None else str(self.status)
        return (
            f"session {self.peer} argv={command!r} status={status} "
            f"outcome={self.outcome} duration={self.duration:.3f}s"
        )
