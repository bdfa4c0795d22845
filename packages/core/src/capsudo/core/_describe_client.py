"""Asking an endpoint what it does: the client's side of the describe extension.

A connection of its own carries one Describe (after a Secret, behind a
password front-end) and gets one Description back. A daemon that does not
know the extension (the Rust one, a proxy) ends the connection or answers
Error and Exit: either way the endpoint does not describe itself, which is
an answer, not a failure to reach it. Neither does one that stays silent
past the timeout.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from capsudo.proto import (CLIENT, Challenged, Describe, Described, DescribingProtocol, Failed, Finished,
                           ProtocolError, Secret, lean)
from capsudo.transport import MessageChannel

from ._client_request import ClientError
from ._password_flow import PasswordFlow, PasswordRequired

#: `capsudo -l`'s status when the endpoint does not describe itself.
NOT_DESCRIBED_STATUS = 3


class NotDescribed(ClientError):
    """The endpoint was reached but does not describe itself; the text says how it answered."""

    def __init__(self, how: str) -> None:
        super().__init__(f"this endpoint does not describe itself ({how})", NOT_DESCRIBED_STATUS)


@dataclass(frozen=True)
class EndpointInfo:
    """What an endpoint says it does. Fields it did not tell are None.

    `arguments` is "pinned" (the client's are ignored), "prefix" (they
    follow `command`) or "any"; `environment` maps each pinned entry's name
    to its value, or to None where the value is not told; `password` is
    whether a front-end asked for one before answering.
    """

    name: str | None
    description: str
    detail: str
    arguments: str | None = None
    command: list[str] | None = None
    program: str | None = None
    client_environment: bool | None = None
    environment: dict[str, str | None] | None = None
    user: str | None = None
    password: bool = False
    approval: bool | None = None
    expires: float | None = None
    uses_left: int | None = None
    #: The Description's JSON object as it came, with fields this version does not know.
    fields: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_fields(cls, fields: dict[str, Any], password: bool) -> EndpointInfo:
        def get(key: str, kind: type | tuple[type, ...]) -> Any:
            value = fields.get(key)
            return value if isinstance(value, kind) else None

        environment = get("environment", dict)
        if environment is not None:
            environment = {str(k): v if isinstance(v, str) else None for k, v in environment.items()}
        command = get("command", list)
        return cls(
            name=get("name", str), description=get("description", str) or "", detail=get("detail", str) or "full",
            arguments=get("arguments", str), command=[str(word) for word in command] if command is not None else None,
            program=get("program", str), client_environment=get("client_environment", bool),
            environment=environment, user=get("user", str), password=password, approval=get("approval", bool),
            expires=get("expires", (int, float)), uses_left=get("uses_left", int), fields=dict(fields),
        )

    def as_json(self) -> dict[str, Any]:
        """The description for programs: the daemon's object, and whether a password was asked."""
        return {**self.fields, "password": self.password}


Connect = Callable[[], Awaitable[MessageChannel]]
_LINK_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


async def _ask(connect: Connect, secret: bytes | None) -> dict[str, Any] | tuple[int, list[str]]:
    """One connection: the Description's object, or the status and errors of a refusal."""
    channel = await connect()
    protocol = DescribingProtocol(CLIENT)
    errors: list[str] = []
    async with channel:
        try:
            if secret is not None:
                protocol.send(lean.SECRET)
                await channel.send(Secret(secret))
            protocol.send(lean.DESCRIBE)
            await channel.send(Describe())
            while True:
                received = await channel.receive()
                if received is None:
                    raise NotDescribed("it closed the connection" + (f": {errors[-1]}" if errors else ""))
                event = protocol.receive(received.message)
                if isinstance(event, Described):
                    return event.fields
                if isinstance(event, Failed):
                    errors.append(event.text)
                elif isinstance(event, Challenged):
                    raise PasswordRequired(event.prompt)
                elif isinstance(event, Finished):
                    return event.status, errors
        except ProtocolError as exc:
            raise NotDescribed(f"its answer is not a description: {exc}") from None
        except _LINK_ERRORS as exc:
            reason = exc.__cause__ if exc.__cause__ is not None else exc
            raise NotDescribed(f"it broke the connection: {getattr(reason, 'strerror', None) or reason}") from None


async def describe_channel(connect: Connect, timeout: float, ask_secret: Callable[[str], bytes] | None) -> EndpointInfo:
    """Ask until described, following a password front-end's challenge like a session does."""
    flow = PasswordFlow(ask_secret)
    challenged = False
    while True:
        try:
            with trio.fail_after(timeout):
                answer = await _ask(connect, flow.secret)
        except trio.TooSlowError:
            raise NotDescribed(f"no answer within {timeout:g} s") from None
        except PasswordRequired as challenge:
            challenged = True
            flow.challenged(challenge.prompt)
            continue
        if isinstance(answer, dict):
            return EndpointInfo.from_fields(answer, challenged)
        status, errors = answer
        if flow.finished(status, errors):
            raise NotDescribed(f"it answered: {errors[-1]}" if errors else f"it answered with status {status}")
