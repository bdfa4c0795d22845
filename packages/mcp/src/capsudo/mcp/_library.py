"""The one place capsudo-mcp calls the capsudo library: running a session and describing an endpoint.

Today's `capsudo.core.run` is synchronous, so a session runs in a worker
thread while the server's trio loop reads the program's output from pipes,
keeping at most a cap of each stream and counting the rest. When the
library's trio-native session function and its `describe` request exist,
`run_session` and `describe_endpoint` switch to them here and nowhere else.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field

import trio

import capsudo.core

# What a description says when the endpoint cannot tell yet.
UNKNOWN = "unknown"


@dataclass(frozen=True)
class Description:
    """What one held capability is, as far as it can be told."""

    name: str
    address: str
    description: str = UNKNOWN
    #: True, False (the command is pinned) or "unknown".
    accepts_arguments: bool | str = UNKNOWN
    pinned_environment: list[str] | str = UNKNOWN
    password_needed: bool | str = UNKNOWN
    approval_needed: bool | str = UNKNOWN
    expires: str | None = UNKNOWN
    uses_left: int | str | None = UNKNOWN

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def describe_endpoint(name: str, address: str, declared: dict[str, object] | None = None) -> Description:
    """What the endpoint at `address` says about itself.

    Until the protocol's describe request exists this knows the name and
    address, and whatever the operator declared on capsudo-mcp's command
    line (`--describe`); everything else is "unknown".
    """
    return Description(name=name, address=address, **(declared or {}))  # type: ignore[arg-type]


@dataclass
class Captured:
    """At most `cap` bytes of one stream, and how many came in all."""

    cap: int
    data: bytearray = field(default_factory=bytearray)
    total: int = 0

    @property
    def truncated(self) -> bool:
        return self.total > len(self.data)

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


@dataclass
class Outcome:
    """A session's end as the server reports it."""

    status: int | None
    errors: list[str]
    stdout: Captured
    stderr: Captured
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


async def _drain(fd: int, captured: Captured) -> None:
    async with trio.lowlevel.FdStream(fd) as stream:
        while True:
            try:
                chunk = await stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if not chunk:
                return
            room = captured.cap - len(captured.data)
            if room > 0:
                captured.data += chunk[:room]
            captured.total += len(chunk)


async def _feed(fd: int, data: bytes) -> None:
    async with trio.lowlevel.FdStream(fd) as stream:
        try:
            if data:
                await stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the program stopped reading its input: what it made of it is in its status


async def run_session(
    address: str, argv: list[str], stdin: bytes, *, timeout: float, max_output: int, drain_grace: float = 1.0
) -> Outcome:
    """Run argv on the endpoint, its input `stdin`, and wait at most `timeout` seconds.

    On timeout the program is not hung up (today's library cannot be
    cancelled): our ends of its pipes close, and the worker thread is left to
    finish with the session.
    """
    stdin_read, stdin_write = os.pipe()
    stdout_read, stdout_write = os.pipe()
    stderr_read, stderr_write = os.pipe()
    for fd in (stdin_write, stdout_read, stderr_read):
        os.set_blocking(fd, False)
    out, err = Captured(max_output), Captured(max_output)

    def session() -> capsudo.core.SessionResult:
        try:
            return capsudo.core.run(argv, endpoint=address, stdin=stdin_read, stdout=stdout_write, stderr=stderr_write)
        finally:
            # The daemon's program holds its own copies; ours go so the pipes end with it.
            for fd in (stdin_read, stdout_write, stderr_write):
                os.close(fd)

    started = time.monotonic()
    outcome = Outcome(None, [], out, err, 0.0)
    with trio.move_on_after(timeout) as deadline:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_feed, stdin_write, stdin)
            nursery.start_soon(_drain, stdout_read, out)
            nursery.start_soon(_drain, stderr_read, err)
            try:
                result = await trio.to_thread.run_sync(session, abandon_on_cancel=True)
                outcome.status, outcome.errors = result.status, list(result.errors)
            except capsudo.core.ClientError as exc:
                outcome.failure = str(exc)
            # A program that left a child holding its output must not hold the answer too.
            nursery.cancel_scope.deadline = trio.current_time() + drain_grace
    outcome.timed_out = deadline.cancelled_caught and outcome.status is None and outcome.failure is None
    outcome.duration = time.monotonic() - started
    return outcome
