"""The daemon's side of one session: handshake, decision, run, status.

Written against MessageChannel only: the same code serves a Unix socket, a
byte channel, or a socket handed over by a password front-end. What runs is
the decision's (by default the endpoint's attenuation); what happened goes
to an event sink, as events that carry the session's id.
"""

from __future__ import annotations

import dataclasses
import shlex
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import trio

from capsudo.proto import (DESCRIBING, NOTE_PREFIX, Description, DescribingProtocol, Error, Exit, ProtocolError,
                           Reason, Refused, Resized, SessionProtocol, reason)
from capsudo.transport import MessageChannel

from ._child_setup import PreparedChild, prepared_child
from ._decision import Allow, Asked, Decision, Held, Refuse, attenuating
from ._description import EndpointDescription, description_fields
from ._events import (Accepted, Decided, Ended, EventSink, Requested, SessionEvent, SessionRecord, Started,
                      env_names, new_session_id)
from ._handshake import Request, daemon_protocol, read_request
from ._limits import SessionLimits
from ._policy import Policy, ProgramNotFound, dropped, resolve_program
from ._policy_error import PolicyError
from ._program_limits import format_bytes, format_seconds
from ._run_as import program_environment
from ._spawn import RunningProgram, SpawnError, open_plain_program, signal_group

CANNOT_RUN_STATUS = 127
FAILURE_STATUS = 1
# After a client left and its program was hung up: how long the session still
# waits for the program's end before it lets go.
LEFTOVER_GRACE = 1.0

_LINK_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)
_WITHDRAWN = Reason("withdrawn", "the client left while its request was pending")


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
        #: What a client whose program this stop hangs up is told, if anything (an expiry, a revocation).
        self.why: str | None = None

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
            signal_group(program.pid, signal.SIGCONT)
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
        signal_group(program.pid, signal.SIGCONT)  # a program stopped by ^Z must see its hang-up now
        await trio.sleep(grace)
        signal_group(program.pid, signal.SIGKILL)


class _Session:
    """One session's channel, protocol, and how it is going so far."""

    def __init__(
        self, channel: MessageChannel, limits: SessionLimits, emit: EventSink, protocol: type[SessionProtocol],
        session_id: str | None = None,
    ) -> None:
        self.id = session_id or new_session_id()
        self.channel = channel
        self.protocol = daemon_protocol(limits, protocol)
        self.limits = limits
        self.emit = emit
        self.status: int | None = None
        self.outcome = "ok"
        self.timed_out = False


async def _follow_resizes(session: _Session, resize: Callable[[object], None]) -> None:
    """Pass each window-size change to `resize`; return when the client goes away (or breaks the protocol)."""
    while True:
        try:
            received = await session.channel.receive()
            event = session.protocol.receive(received.message) if received is not None else None
        except (ProtocolError, *_LINK_ERRORS):
            return
        if received is None:
            return
        if isinstance(event, Resized):
            resize(event.winsize)


async def _watch_client(session: _Session, program: RunningProgram) -> None:
    """Apply window-size changes until the client goes away."""
    await _follow_resizes(session, program.resize)
    session.outcome = "client hung up"


async def _supervise(session: _Session, program: RunningProgram, shutdown: Hangup,
                     timeout: float | None = None) -> int | None:
    """The program's status; None when the client left and the wait was cut short.

    Past `timeout` seconds the program's group gets SIGTERM, and SIGKILL
    once the hang-up grace has passed too.
    """
    status = None
    limits = session.limits
    with shutdown.tracking(program):
        async with trio.open_nursery() as nursery:

            async def watch_then_hang_up() -> None:
                await _watch_client(session, program)
                await _hang_up(program, limits.hangup_grace)
                # Nobody is left to take the status, nor output still in flight
                # (a pty relay writing to a pipe that nobody reads): that must not
                # keep the session open.
                await trio.sleep(LEFTOVER_GRACE)
                nursery.cancel_scope.cancel()

            async def stop_at_timeout() -> None:
                await trio.sleep(timeout)
                session.timed_out = True
                if signal_group(program.pid, signal.SIGTERM):
                    await trio.sleep(limits.hangup_grace)
                    signal_group(program.pid, signal.SIGKILL)

            nursery.start_soon(watch_then_hang_up)
            if timeout is not None:
                nursery.start_soon(stop_at_timeout)
            status = await program.wait()
            nursery.cancel_scope.cancel()
    return status


def open_program(request: Request, executable: str, argv: list[str], env: dict[str, str], peer, before_exec=None,
                 channel=None):
    """The program, on a pty or on the client's descriptors, under the caller's security label if it has one.

    On a pty, with the `channel` of a local client, ^Z stops the program and then the client.
    """
    client_pid = peer.pid if peer is not None and peer.pid > 0 else None
    label = peer.label if peer is not None else None
    if request.interactive:
        from ._job_control import open_peer_pidfd
        from ._pty import open_pty_program

        client_pidfd = open_peer_pidfd(channel) if channel is not None and client_pid is not None else None
        return open_pty_program(
            executable, argv, env, request.fds, request.winsize, client_pid=client_pid,
            client_pidfd=client_pidfd, peer_uid=peer.uid if peer is not None else None, label=label,
            before_exec=before_exec,
        )
    return open_plain_program(executable, argv, env, request.fds, label=label, before_exec=before_exec)


async def serve_session(
    channel: MessageChannel,
    policy: Policy,
    limits: SessionLimits = SessionLimits(),
    shutdown: Hangup | None = None,
    *,
    decide: Decision = attenuating,
    events: EventSink | None = None,
    protocol: type[SessionProtocol] = DescribingProtocol,
    endpoint: str | None = None,
    description: EndpointDescription | None = None,
    session_id: str | None = None,
) -> SessionRecord:
    """Serve one client to its end; never raises for anything the client did.

    `decide` turns the request into what runs (default: the endpoint's
    attenuation); `events` receives the session's events. The log line made
    from them is returned. `protocol` is the session protocol to follow (a
    subclass may know more messages; the channel must decode them).
    `endpoint` is the endpoint's name the program reads in CAPSUDO_ENDPOINT
    (default: the socket path it was accepted on, else the channel's description).
    `description` is what the endpoint tells a client that asks what it does
    (default: everything its policy says, under the name `endpoint`).
    `session_id` is the id a front-end already gave the session (default: a
    new one), so that one session reads as one story through a chain.
    """
    record = SessionRecord()

    def emit(event: SessionEvent) -> None:
        record(event)
        if events is not None:
            events(event)

    session = _Session(channel, limits, emit, protocol, session_id)
    clock = time.monotonic()
    emit(Accepted(session.id, channel.peer, channel.description))
    try:
        called = endpoint or _local_address(channel)
        about = description if description is not None else EndpointDescription()
        if about.name is None:
            # Named by its socket's path; a channel's description names the peer, not the endpoint.
            about = dataclasses.replace(about, name=called if called != channel.description else None)
        await _serve(session, policy, shutdown or Hangup(), decide, called, about)
    finally:
        with trio.CancelScope(shield=True):
            await channel.aclose()
        emit(Ended(session.id, session.status, session.outcome, time.monotonic() - clock))
    return record


def _local_address(channel: MessageChannel) -> str:
    """The path of the Unix socket a channel was accepted on; else what the channel says of itself.

    A socket bound through its directory's descriptor (/proc/self/fd/N/…)
    has no path worth telling: the command that knows it passes `endpoint`.
    """
    sock = getattr(channel, "socket", None)
    try:
        address = sock.getsockname() if sock is not None else None
    except OSError:
        address = None
    if isinstance(address, str) and address and not address.startswith("/proc/"):
        return address
    return channel.description


async def _refuse(session: _Session, text: str, status: int) -> None:
    session.outcome = f"refused: {text}"
    session.status = status
    await _send_quietly(session.channel, Error(text), Exit(status))


async def _serve(session: _Session, policy: Policy, shutdown: Hangup, decide: Decision, endpoint: str,
                 about: EndpointDescription) -> None:
    channel, limits = session.channel, session.limits
    try:
        with trio.fail_after(limits.handshake_timeout):
            request = await read_request(channel, session.protocol)
    except trio.TooSlowError:
        why = reason("handshake-timeout", seconds=limits.handshake_timeout)
        return await _refuse(session, why.text, FAILURE_STATUS)
    except (Refused, ProtocolError) as exc:
        return await _refuse(session, str(exc), FAILURE_STATUS)
    except _LINK_ERRORS as exc:
        session.outcome = f"connection lost during handshake: {exc}"
        return
    if request is None:
        session.outcome = "client left before End"
        return
    if session.protocol.phase == DESCRIBING:
        request.close_fds()
        session.outcome = "described"
        await _send_quietly(channel, Description(description_fields(about, policy)))
        return

    try:
        session.emit(Requested(session.id, tuple(request.argv), env_names(request.env_entries), request.interactive))
        left_out = dropped(policy, request.argv, request.env_entries)
        if left_out and policy.refuse_dropped:
            why = reason("dropped", what=str(left_out))
            session.emit(Decided(session.id, False, reason=why, dropped_argv=left_out.argv,
                                 dropped_env_names=left_out.env_names))
            request.close_fds()
            return await _refuse(session, why.text, FAILURE_STATUS)
        decision = await decide(Asked(session.id, channel.peer, channel.description, request, policy))
        if not isinstance(decision, (Allow, Refuse)):
            decision = await _await_held(session, request, decision)
            if decision is None:
                request.close_fds()
                return
        if not isinstance(decision, Allow):
            session.emit(Decided(session.id, False, reason=decision.reason, decision=decision.decision,
                                 approver=decision.approver))
            request.close_fds()
            return await _refuse(session, decision.reason.text, FAILURE_STATUS)
        argv = decision.argv
        try:
            identity = policy.run_as.resolve()
        except PolicyError as exc:  # the account went away since the endpoint was configured
            why = reason("cannot-run", program=argv[0], why=str(exc))
            session.emit(Decided(session.id, False, reason=why))
            request.close_fds()
            return await _refuse(session, why.text, CANNOT_RUN_STATUS)
        env = program_environment(decision.env, policy.environment, identity, caller=channel.peer,
                                  endpoint=endpoint, session=session.id)
        session.emit(Decided(session.id, True, tuple(argv), tuple(env),
                             decision="approved" if decision.approver is not None else None,
                             approver=decision.approver, dropped_argv=left_out.argv,
                             dropped_env_names=left_out.env_names))
        try:
            executable = resolve_program(argv[0], env)
            async with prepared_child(policy, identity, session.id, terminal=request.interactive) as child:
                async with open_program(request, executable, argv, env, channel.peer, child.before_exec,
                                        channel) as program:
                    request.close_fds()  # the program holds them now; our copies would delay end-of-file
                    session.emit(Started(session.id, program.pid, executable, tuple(argv)))
                    status = await _supervise(session, program, shutdown, policy.limits.timeout)
                stopped = _why_stopped(session, policy, child)
        except (SpawnError, ProgramNotFound, PolicyError, OSError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            # Descriptors first: over a multiplexed channel the Exit waits
            # until the outputs reach their end, which our copies hold back.
            request.close_fds()
            return await _refuse(session, reason("cannot-run", program=argv[0], why=why).text, CANNOT_RUN_STATUS)
    finally:
        request.close_fds()
    session.status = status
    if session.outcome != "ok":
        return
    # What the pins left out, told last: the one line comes after the program's output, just before its status.
    notes = [Error(f"{NOTE_PREFIX}this endpoint ignores {left_out}: ran {shlex.join(argv)}")] if left_out else []
    if stopped is None and shutdown.why is not None:
        session.outcome = shutdown.why
        await _send_quietly(channel, *notes, Error(shutdown.why), Exit(status))
    elif stopped is None:
        await _send_quietly(channel, *notes, Exit(status))
    else:
        session.outcome = stopped
        await _send_quietly(channel, *notes, Error(f"the program {stopped}"), Exit(status))


async def _await_held(session: _Session, request: Request, held: Held) -> Allow | Refuse | None:
    """The held decision, watching the client meanwhile; None when the client left first.

    No handshake deadline runs here: the wait is the decision's own (its
    timeout). A window-size change while waiting is kept for the program.
    """
    result: Allow | Refuse | None = None
    async with trio.open_nursery() as nursery:

        async def decided() -> None:
            nonlocal result
            result = await held.outcome()
            nursery.cancel_scope.cancel()

        async def watch() -> None:
            def keep_for_the_program(winsize) -> None:
                request.winsize = winsize

            await _follow_resizes(session, keep_for_the_program)
            held.withdraw()
            session.outcome = "client left while its request was pending"
            session.emit(Decided(session.id, False, reason=_WITHDRAWN, decision="withdrawn"))
            nursery.cancel_scope.cancel()

        nursery.start_soon(decided)
        nursery.start_soon(watch)
    return result


def _why_stopped(session: _Session, policy: Policy, child: PreparedChild) -> str | None:
    """How the daemon's limits ended the program, for the client and the log; None when they did not."""
    limits = policy.limits
    if session.timed_out:
        return f"ran past its {format_seconds(limits.timeout)} timeout and was stopped"
    if child.cgroup is not None and limits.memory is not None and child.cgroup.oom_killed():
        return f"went past its {format_bytes(limits.memory)} memory limit and was killed"
    return None
