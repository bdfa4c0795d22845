"""The seam between what a client asked and what runs: a decision, with attenuation as its default.

After the handshake, a daemon asks its decision what to do with the request:
who asked (the peer, as the kernel names it), what they asked for, and what
the endpoint allows. The answer is Allow (run this argv in this
environment) or Refuse (with a reason the client is told in one line). The
default decision is the endpoint's attenuation (`-f`, `-E`, `-e`); one that
waits for a person, counts uses or watches the clock wraps or replaces it.

A decision that waits (for a person's approval) answers Held: the session
then watches its client while it waits, withdraws the request if the client
leaves, and awaits the outcome without any handshake deadline running.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from capsudo.proto import Reason
from capsudo.transport import PeerCredentials

from ._handshake import Request
from ._policy import Policy, attenuate


@dataclass(frozen=True, slots=True)
class Asked:
    """Everything a decision may look at."""

    session: str
    peer: PeerCredentials | None
    where: str
    request: Request
    policy: Policy


@dataclass(frozen=True, slots=True)
class Allow:
    argv: list[str]
    env: Mapping[str, str]
    #: Who approved it, when a person did (then the audit says "approved").
    approver: str | None = None


@dataclass(frozen=True, slots=True)
class Refuse:
    reason: Reason
    #: What the audit calls it when it is not a plain refusal: "denied", "timed out", "withdrawn".
    decision: str | None = None
    approver: str | None = None


class Held(Protocol):
    """A decision still to be made by someone else, which the session waits for."""

    async def outcome(self) -> Allow | Refuse:
        """The decision, once made (a timeout is a Refuse too)."""

    def withdraw(self) -> None:
        """The client went away: the request is no longer anyone's to decide."""


Decision = Callable[[Asked], Awaitable[Allow | Refuse | Held]]


async def attenuating(asked: Asked) -> Allow:
    """The endpoint's pins applied to the request: what capsudod has always run."""
    argv, env = attenuate(asked.policy, asked.request.argv, asked.request.env_entries)
    return Allow(argv, env)
