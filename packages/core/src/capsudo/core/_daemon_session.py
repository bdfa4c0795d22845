"""The daemon's side of one session: handshake, attenuation, run, status.

Written against MessageChannel only: the same code serves a Unix socket, a
byte channel, or a socket handed over by a password front-end.
"""

from __future__ import annotations

import shlex
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import trio

from capsudo.proto import Error, Exit, ProtocolError, Winsize
from capsudo.transport import MessageChannel

from ._handshake import HandshakeError, Request, read_request
from ._limits import SessionLimits
from ._policy import Policy, ProgramNotFound, attenuate, resolve_program
from ._spawn import RunningProgram, SpawnError, open_plain_program, signal_group

CANNOT_RUN_STATUS = 127
FAILURE_STATUS = 1
# After a client left and its program was hung up: how long the session still
# waits for the program's end before it lets go.
LEFTOVER_GRACE = 1.0

_LINK_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


@dataclass
class SessionRecord:
    """One line of the daemon's log: who ran what, and how it ended."""

    peer: str
    argv: list[str] | None = None
    status: int | None = None
    outcome: str = "ok"
    started: float = 0.0
    duration: float = 0.0

    def __str__(self) -> str:
        command = shlex.join(self.argv) if self.argv is not None else "-"
        status = "-" if self.status is None else str(self.status)
        return (
            f"session {self.peer} argv={command!r} status={status} "
            f"outcome={self.outcome} duration={self.duration:.3f}s"
        )


class Hangup:
    """The running programs, so that a stop hangs them all up at once.

    Tracked here rather than watched by a task per session: a task per
    session that waits for a stop is a task started and cancelled for every
    session that never sees one.
    """

    def __init__(self) -> None:
        self._programs: set[RunningProgram] = set()
        self._none_left = trio.Event()
        self.stopping = False

    @contextmanager
    def tracking(self, program: RunningProgram) -> Iterator[None]:
        if self.stopping:
            # Started while the stop was under way: it is hung up at once.
            signal_group(program.pid, signal.SIGHUP)
        self._programs.add(program)
        try:
            yield
        finally:
            self._programs.discard(program)
            if self.stopping and not self._programs:
                self._none_left.set()

    async def hang_up_all(self, grace: float) -> None:
        """SIGHUP to every program, and SIGKILL to those still running after `grace`."""
        self.stopping = True
        if not self._programs:
            return
        for program in list(self._programs):
            signal_group(program.pid, signal.SIGHUP)
        with trio.move_on_after(grace):
            await self._none_left.wait()
        for program in list(self._programs):
            signal_group(program.pid, signal.SIGKILL)


async def _send_quietly(channel: MessageChannel, *messages) -> bool:
    try:
        for message in messages:
            await channel.send(message)
    except _LINK_ERRORS:
        return False
    return True


async def _hang_up(program: RunningProgram, grace: float) -> None:
    if signal_group(program.pid, signal.SIGHUP):
        await trio.sleep(grace)
        signal_group(program.pid, signal.SIGKILL)


async def _watch_client(channel: MessageChannel, program: RunningProgram, record: SessionRecord) -> None:
    """Apply window-size changes until the client goes away."""
    while True:
        try:
            received = await channel.receive()
        except (ProtocolError, *_LINK_ERRORS):
            received = None
        if received is None:
            record.outcome = "client hung up"
            return
        if isinstance(received.message, Winsize):
            program.resize(received.message)


async def _supervise(
    channel: MessageChannel, program: RunningProgram, limits: SessionLimits, shutdown: Hangup, record: SessionRecord
) -> int | None:
    """The program's status; None when the client left and the wait was cut short."""
    status = None
    with shutdown.tracking(program):
        async with trio.open_nursery() as nursery:

            async def watch_then_hang_up() -> None:
                await _watch_client(channel, program, record)
                await _hang_up(program, limits.hangup_grace)
                # Nobody is left to take the status, nor output still in flight
                # (a pty relay writing to a pipe that nobody reads): that must not
                # keep the session open.
                await trio.sleep(LEFTOVER_GRACE)
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch_then_hang_up)
            status = await program.wait()
            nursery.cancel_scope.cancel()
    return status


def open_program(request: Request, executable: str, argv: list[str], env: dict[str, str], client_pid: int | None):
    if request.interactive:
        from ._pty import open_pty_program

        return open_pty_program(executable, argv, env, request.fds, request.winsize, client_pid=client_pid)
    return open_plain_program(executable, argv, env, request.fds)


async def serve_session(
    channel: MessageChannel,
    policy: Policy,
    limits: SessionLimits = SessionLimits(),
    shutdown: Hangup | None = None,
) -> SessionRecord:
    """Serve one client to its end; never raises for anything the client did."""
    record = SessionRecord(peer=str(channel.peer) if channel.peer else channel.description, started=time.time())
    clock = time.monotonic()
    shutdown = shutdown or Hangup()
    try:
        await _serve(channel, policy, limits, shutdown, record)
    finally:
        record.duration = time.monotonic() - clock
        with trio.CancelScope(shield=True):
            await channel.aclose()
    return record


async def _refuse(channel: MessageChannel, record: SessionRecord, reason: str, status: int) -> None:
    record.outcome = f"refused: {reason}"
    record.status = status
    await _send_quietly(channel, Error(reason), Exit(status))


async def _serve(
    channel: MessageChannel, policy: Policy, limits: SessionLimits, shutdown: Hangup, record: SessionRecord
) -> None:
    try:
        with trio.fail_after(limits.handshake_timeout):
            request = await read_request(channel, limits)
    except trio.TooSlowError:
        return await _refuse(channel, record, f"handshake not completed within {limits.handshake_timeout:g}s", FAILURE_STATUS)
    except (HandshakeError, ProtocolError) as exc:
        return await _refuse(channel, record, str(exc), FAILURE_STATUS)
    except _LINK_ERRORS as exc:
        record.outcome = f"connection lost during handshake: {exc}"
        return
    if request is None:
        record.outcome = "client left before End"
        return

    try:
        argv, env = attenuate(policy, request.argv, request.env_entries)
        record.argv = argv
        try:
            executable = resolve_program(argv[0], env)
            client_pid = channel.peer.pid if channel.peer is not None and channel.peer.pid > 0 else None
            async with open_program(request, executable, argv, env, client_pid) as program:
                request.close_fds()  # the program holds them now; our copies would delay end-of-file
                status = await _supervise(channel, program, limits, shutdown, record)
        except (SpawnError, ProgramNotFound, OSError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            # Descriptors first: over a multiplexed channel the Exit waits
            # until the outputs reach their end, which our copies hold back.
            request.close_fds()
            return await _refuse(channel, record, f"unable to run {argv[0]}: {reason}", CANNOT_RUN_STATUS)
    finally:
        request.close_fds()
    record.status = status
    if record.outcome == "ok":
        await _send_quietly(channel, Exit(status))
