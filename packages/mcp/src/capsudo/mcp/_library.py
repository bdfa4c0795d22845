"""The one place capsudo-mcp calls the capsudo library: running a session and describing an endpoint.

Both are trio-native library calls made on the server's own loop:
`run_async` captures the program's output up to a cap and hangs the
program up through the protocol when the call's time is over;
`describe_async` asks the endpoint what it does. What the operator
declared on capsudo-mcp's command line (`--description`, `--pinned`) wins
over what the endpoint says, for the daemons that cannot say it.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass
from datetime import datetime, timezone

import capsudo.core

# What a description says when the endpoint cannot tell.
UNKNOWN = "unknown"

#: Seconds an endpoint has to describe itself before it counts as not describing itself.
DESCRIBE_TIMEOUT = 2.0


@dataclass(frozen=True)
class Description:
    """What one held capability is, as far as it can be told."""

    name: str
    address: str
    description: str = UNKNOWN
    #: True, False (the command is pinned) or "unknown".
    accepts_arguments: bool | str = UNKNOWN
    #: Names of the environment entries the endpoint sets, whatever the caller sends.
    pinned_environment: list[str] | str = UNKNOWN
    program: str | None = UNKNOWN
    user: str | None = UNKNOWN
    password_needed: bool | str = UNKNOWN
    approval_needed: bool | str = UNKNOWN
    #: ISO 8601 in UTC, or "unknown" (a daemon tells it only for a grant with an end).
    expires: str | None = UNKNOWN
    uses_left: int | str | None = UNKNOWN
    #: Why the endpoint told nothing, when it did not describe itself; else None.
    not_described: str | None = None

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def _from_info(name: str, address: str, info: capsudo.core.EndpointInfo) -> dict[str, object]:
    told: dict[str, object] = {"name": name, "address": address, "password_needed": info.password}
    if info.description:
        told["description"] = info.description
    if info.arguments is not None:
        told["accepts_arguments"] = info.arguments != "pinned"
    if info.environment is not None:
        told["pinned_environment"] = sorted(info.environment)
    if info.detail == "full":
        # A full description tells these even when they are null: unpinned program, the daemon's user.
        told["program"] = info.program
        told["user"] = info.user
    if info.approval is not None:
        told["approval_needed"] = info.approval
    if info.expires is not None:
        told["expires"] = datetime.fromtimestamp(info.expires, timezone.utc).isoformat(timespec="seconds")
    if info.uses_left is not None:
        told["uses_left"] = info.uses_left
    return told


async def describe_endpoint(name: str, address: str, declared: dict[str, object] | None = None,
                            *, timeout: float = DESCRIBE_TIMEOUT) -> Description:
    """What the endpoint at `address` says about itself, with the operator's declarations over it.

    A daemon that does not describe itself, or cannot be reached, leaves
    every field "unknown" and says why in `not_described`; a password
    front-end is known by its challenge, which is not answered.
    """
    told: dict[str, object] = {"name": name, "address": address}
    try:
        info = await capsudo.core.describe_async(address, timeout=timeout)
    except capsudo.core.NotDescribed as exc:
        told["not_described"] = str(exc)
    except capsudo.core.ClientError as exc:
        if "asks for a password" in str(exc):
            told["password_needed"] = True
        told["not_described"] = str(exc)
    else:
        told = _from_info(name, address, info)
    told.update(declared or {})
    return Description(**told)  # type: ignore[arg-type]


@dataclass
class Outcome:
    """A session's end as the server reports it."""

    status: int | None
    errors: list[str]
    stdout: bytes
    stderr: bytes
    stdout_truncated: bool
    stderr_truncated: bool
    duration: float
    #: The failure to reach or use the endpoint, when there was no status.
    failure: str | None = None
    timed_out: bool = False
    session_id: str | None = None

    @property
    def signal(self) -> str | None:
        # The daemon reports death by signal N as status 128 + N.
        if self.status is not None and 128 < self.status <= 128 + 64:
            try:
                return signal.Signals(self.status - 128).name
            except ValueError:
                return None
        return None


def _client_error(group: BaseExceptionGroup) -> capsudo.core.ClientError | None:
    """The ClientError inside a nursery's group, when that is all it holds."""
    matched, rest = group.split(capsudo.core.ClientError)
    if matched is None or rest is not None:
        return None
    leaf: BaseException = matched
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    return leaf if isinstance(leaf, capsudo.core.ClientError) else None


async def run_session(address: str, argv: list[str], stdin: bytes, *, timeout: float, max_output: int) -> Outcome:
    """Run argv on the endpoint, its input `stdin`, keeping `max_output` bytes of each stream.

    Past `timeout` seconds the connection closes, and the daemon hangs the
    program up (SIGHUP, then SIGKILL after its grace); so does a call the
    agent cancels. A session on an approval endpoint waits for its decision
    within the same time, and leaving withdraws its request.
    """
    started = time.monotonic()
    try:
        result = await capsudo.core.run_async(argv, endpoint=address, input=stdin, capture_output=True,
                                              max_output=max_output, timeout=timeout)
    except TimeoutError:
        return Outcome(None, [], b"", b"", False, False, time.monotonic() - started, timed_out=True)
    except capsudo.core.ClientError as exc:
        return Outcome(None, [], b"", b"", False, False, time.monotonic() - started, failure=str(exc))
    except BaseExceptionGroup as group:
        # run_async reaches the endpoint inside its nursery, whose group carries the ClientError.
        failed = _client_error(group)
        if failed is None:
            raise
        return Outcome(None, [], b"", b"", False, False, time.monotonic() - started, failure=str(failed))
    return Outcome(result.status, list(result.errors), result.stdout or b"", result.stderr or b"",
                   result.stdout_truncated, result.stderr_truncated, result.duration)
