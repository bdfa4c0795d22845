"""What an endpoint tells a client that asks (the describe extension), made from its policy.

The answer is a JSON object (docs/protocol.md, "Extensions"). It says what
the policy already decides for every client alike: whether arguments count,
whether the client's environment does, which entries the daemon pins, which
program runs. Values of pinned entries are told only for a few names that
never hold secrets (`TOLD_VALUES`); for every other entry only its name.
An operator who wants less (`--describe name`) gets the name and the
description alone. Fields that a grant or an approval would fill in
(`approval`, `expires`, `uses_left`) are optional, so that a later decision
can fill them without a new message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._policy import DEFAULT_PROGRAM, Policy, ProgramNotFound, resolve_program

#: Pinned entries whose values are told: locale, time zone, search path and
#: the account's names, which no operator uses to hold a secret.
TOLD_VALUES = frozenset({"PATH", "LANG", "LANGUAGE", "TZ", "TERM", "HOME", "USER", "LOGNAME", "SHELL"})


@dataclass(frozen=True)
class EndpointDescription:
    """What the operator lets the endpoint say about itself, beside its policy."""

    name: str | None = None
    text: str = ""
    #: "full", or "name": the name and the description only.
    detail: str = "full"
    #: Filled by decisions that know them (approval, a grant's lifetime).
    approval: bool | None = None
    expires: float | None = None
    uses_left: int | None = None


def _told(name: str) -> bool:
    return name in TOLD_VALUES or name.startswith("LC_")


def description_fields(about: EndpointDescription, policy: Policy) -> dict[str, Any]:
    """The Description's JSON object for this endpoint."""
    fields: dict[str, Any] = {"name": about.name, "description": about.text, "detail": about.detail}
    if about.detail != "full":
        return fields
    pinned = {name: (value if _told(name) else None) for name, value in policy.environment.items()}
    program = policy.program or DEFAULT_PROGRAM
    try:
        path: str | None = resolve_program(program[0], policy.environment)
    except ProgramNotFound:
        path = None
    fields.update(
        # "pinned": the client's arguments are ignored; "prefix": they follow
        # the command; "any": nothing is pinned, the client names the program.
        arguments="pinned" if policy.fixed_arguments else "prefix" if policy.program else "any",
        command=list(policy.program),
        program=path if policy.program else None,
        client_environment=not policy.fixed_environment,
        environment=pinned,
        user=policy.run_as.user,
    )
    for key in ("approval", "expires", "uses_left"):
        value = getattr(about, key)
        if value is not None:
            fields[key] = value
    return fields
