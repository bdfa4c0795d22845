"""One endpoint of the daemon: its listener, its sessions, and a configuration a reload may change.

The same object serves the endpoint of a command line and each endpoint of
a configuration file. A session follows the configuration that held when it
began; a reload that changes only what sessions do (pins, environment,
session limits) replaces `config`, and the next session follows the new one.

Its lifetime (`expires`, `uses`) is kept here: each session's decision first
asks whether the endpoint still holds, and an endpoint that expires, is spent
or is revoked stops accepting at once (its socket goes). The sessions under
way are known by their ids, for `capsudoctl sessions` and `kill`.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

import trio

from capsudo.core import (Accepted, Allow, Asked, Decided, EndpointDescription, Ended, EventSink, Hangup, Pending,
                          Refuse, ServedEndpoint, SessionEvent, Started, attenuating, expired_reason, revoked_reason,
                          rfc3339, serve_session, spent_reason)
from capsudo.transport import EndpointError, open_listener

from ._approval import HeldRequest, caller_details, user_name
from ._chained import chained_session_id


@dataclass
class RunningSession:
    """A session under way, as `capsudoctl sessions` shows it."""

    id: str
    endpoint: str | None
    peer: object
    since: float = field(default_factory=time.time)
    argv: tuple[str, ...] = ()
    pid: int | None = None


class EndpointStartError(Exception):
    """The endpoint cannot listen; the message says why, on one line."""


class DaemonEndpoint:
    def __init__(self, name: str | None, config, listener, *, log: Callable[[str], None],
                 events: EventSink | None = None, finish_when_removed: bool = False,
                 exposed: Sequence[tuple[object, object]] = (),
                 on_use: Callable[["DaemonEndpoint"], None] | None = None,
                 approval=None, approvals=None) -> None:
        self.name = name
        self.config = config
        #: ApprovalSettings when each session waits for a person's decision; the daemon's ApprovalBook.
        self.approval = approval
        self.approvals = approvals
        self.listener = listener
        self.finish_when_removed = finish_when_removed
        self._log = log if name is None else (lambda line: log(f"endpoint {name}: {line}"))
        self._audit = events
        lifetime = config.lifetime
        self.expires_at = lifetime.deadline(time.time())
        self.uses_left = lifetime.uses
        # After each session it allowed (a grant's state is written again).
        self._on_use = on_use
        #: Why it no longer accepts: "expired", "spent" or "revoked"; None while it does.
        self.ended: str | None = None
        self.sessions: dict[str, RunningSession] = {}
        self._expiry_moved = trio.CancelScope()
        # What the program reads in CAPSUDO_ENDPOINT: the endpoint's name, else its socket's path.
        self._called = name if name is not None else getattr(listener, "path", None)
        self._shutdown = Hangup()
        #: Where else the endpoint is offered (`expose`): each (config, listener).
        self.exposures = tuple(exposure for exposure, _ in exposed)
        # One session handler and one hang-up for all of the endpoint's listeners.
        self._served = [self._served_on(listener, config), *(self._served_on(other, exposure)
                                                             for exposure, other in exposed)]
        self.served = self._served[0]

    def _served_on(self, listener, config) -> ServedEndpoint:
        limits = config.session_limits
        return ServedEndpoint(
            listener,
            self._serve_one,
            log=self._log,
            limits=config.connection_limits,
            max_handshake_bytes=limits.max_bytes,
            hang_up=partial(self._shutdown.hang_up_all, limits.hangup_grace),
            # Programs get SIGHUP at the stop and SIGKILL after the grace.
            grace=limits.hangup_grace,
        )

    @classmethod
    async def open(cls, name: str | None, config, *, log: Callable[[str], None], adopted=None,
                   events: EventSink | None = None, finish_when_removed: bool = False,
                   exposures: Sequence[object] = (),
                   on_use: Callable[["DaemonEndpoint"], None] | None = None, approval=None,
                   approvals=None) -> "DaemonEndpoint":
        """Listen as `config` says (or on `adopted`, a listener systemd passed) and at each of
        `exposures` (configurations differing only in how they listen); log where. All or none."""
        named = log if name is None else (lambda line: log(f"endpoint {name}: {line}"))
        if (unpinned := config.policy.unpinned_environment_warning()) is not None:
            named(f"warning: {unpinned}")
        listener = adopted if adopted is not None else await _listen(config, named)
        exposed = []
        try:
            for exposure in exposures:
                exposed.append((exposure, await _listen(exposure, named, exposed=True)))
        except BaseException:
            with trio.CancelScope(shield=True):
                for _, other in exposed:
                    await other.aclose()
                await listener.aclose()
            raise
        return cls(name, config, listener, log=log, events=events, finish_when_removed=finish_when_removed,
                   exposed=exposed, on_use=on_use, approval=approval, approvals=approvals)

    def listens_as(self, other) -> bool:
        """Whether `other` can be served on this endpoint's listener (only what sessions do differs)."""
        mine, theirs = self.config, other
        return (
            (mine.address, mine.tls, mine.owner, mine.mode, mine.allow_unsafe_directory)
            == (theirs.address, theirs.tls, theirs.owner, theirs.mode, theirs.allow_unsafe_directory)
            and mine.connection_limits == theirs.connection_limits
            and mine.channel_limits == theirs.channel_limits
            and mine.session_limits.handshake_timeout == theirs.session_limits.handshake_timeout
            and mine.session_limits.max_bytes == theirs.session_limits.max_bytes
            and mine.session_limits.hangup_grace == theirs.session_limits.hangup_grace
            # A new lifetime starts its clock and its count anew, on a new listener.
            and mine.lifetime == theirs.lifetime
        )

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            for served in self._served:
                await nursery.start(served.run)
            nursery.start_soon(self._expire_on_time)
            task_status.started()
            for served in self._served:
                await served.stopped.wait()
            nursery.cancel_scope.cancel()

    def stop(self, *, let_finish: bool = False) -> None:
        for served in self._served:
            served.stop(let_finish=let_finish)

    def revoke(self) -> None:
        """The socket goes at once and the running programs are hung up."""
        self._end("revoked", "revoked; running programs hung up", let_finish=False)

    def renew(self, expires_at: float | None, uses: int | None = None) -> None:
        """A new expiry (and, if given, a new count of uses) for an endpoint that still accepts."""
        self.expires_at = expires_at
        if uses is not None:
            self.uses_left = uses
        self._expiry_moved.cancel()
        self._log(f"renewed: expires {rfc3339(expires_at) if expires_at is not None else 'never'}"
                  f", {self.uses_left if self.uses_left is not None else 'unlimited'} use(s) left")

    def kill(self, session: str) -> bool:
        """Hang one session's program up (SIGKILL after the grace); False when it runs no program."""
        running = self.sessions.get(session)
        if running is None or running.pid is None:
            return False
        pid, grace = running.pid, self.config.session_limits.hangup_grace
        for signum in (signal.SIGHUP, signal.SIGCONT):
            try:
                os.killpg(pid, signum)
            except ProcessLookupError:
                return False

        async def kill_after_grace() -> None:
            await trio.sleep(grace)
            if session in self.sessions:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

        trio.lowlevel.spawn_system_task(kill_after_grace)
        return True

    def _end(self, why: str, line: str, *, let_finish: bool) -> None:
        if self.ended is not None:
            return
        self.ended = why
        self._log(line)
        if not let_finish:
            refused = self.refusal()
            if refused is not None:
                self._shutdown.why = f"{refused.reason.text}: the program was hung up"
        self.stop(let_finish=let_finish)

    async def _expire_on_time(self) -> None:
        while True:
            with trio.CancelScope() as self._expiry_moved:
                if self.expires_at is None:
                    await trio.sleep_forever()
                await trio.sleep(max(0.0, self.expires_at - time.time()))
                finish = self.config.lifetime.finish_at_expiry
                self._end("expired", f"expired at {rfc3339(self.expires_at)}; "
                          f"{'running programs finish' if finish else 'running programs hung up'}",
                          let_finish=finish)
                return

    def refusal(self) -> Refuse | None:
        """Why no session may start now, or None."""
        if self.ended == "revoked":
            return Refuse(revoked_reason())
        if self.expires_at is not None and time.time() >= self.expires_at:
            return Refuse(expired_reason(self.expires_at))
        if self.uses_left is not None and self.uses_left <= 0:
            return Refuse(spent_reason())
        return None

    async def _decide(self, asked: Asked) -> Allow | Refuse | HeldRequest:
        refused = self.refusal()
        if refused is not None:
            return refused
        decision = await attenuating(asked)
        approval = self.approval
        if approval is not None:
            uid = asked.peer.uid if asked.peer is not None else -1
            standing = self.approvals.covering(self.name, uid)
            if standing is None:
                request = self.approvals.hold(asked.session, self.name, uid, approval.timeout, approval.approvers,
                                              self._shown(asked, decision, approval))
                self._audit_event(Pending(asked.session, request.id, request.deadline))
                return HeldRequest(self.approvals, request, decision, self._approved)
            decision = Allow(decision.argv, decision.env,
                             approver=f"{standing.by} (standing approval until {rfc3339(standing.until)})")
        return self._approved(decision)

    def _approved(self, decision: Allow) -> Allow | Refuse:
        """The decision, if the endpoint still holds (an approval may come after it expired), its use counted."""
        refused = self.refusal()
        if refused is not None:
            return refused
        if self.uses_left is not None:
            self.uses_left -= 1
            if self._on_use is not None:
                self._on_use(self)
            if self.uses_left == 0:
                self._end("spent", "no uses left; the last sessions finish", let_finish=True)
        return decision

    def _shown(self, asked: Asked, decision: Allow, approval) -> dict:
        """What an approver sees of a request: the endpoint, the caller, what would run."""
        from capsudo.core import resolve_program

        peer = asked.peer
        try:
            program = resolve_program(decision.argv[0], dict(decision.env))
        except Exception:  # ProgramNotFound, or no argv: shown as unknown, refused at the start
            program = None
        real = os.path.realpath(program) if program is not None else None
        return {
            "description": self.config.description, "where": asked.where, "timeout": approval.timeout,
            "pid": peer.pid if peer is not None else None, "user": user_name(peer.uid) if peer is not None else None,
            "gid": peer.gid if peer is not None else None, "label": peer.label if peer is not None else None,
            **(caller_details(peer.pid) if peer is not None and peer.pid > 0 else {}),
            "argv": list(decision.argv), "env": [f"{key}={value}" for key, value in decision.env.items()],
            "program": program, "resolves_to": real if real != program else None,
            "interactive": asked.request.interactive,
        }

    def _audit_event(self, event) -> None:
        if self._audit is not None:
            self._audit(event)

    def _event(self, event: SessionEvent) -> None:
        if isinstance(event, Accepted):
            self.sessions[event.session] = RunningSession(event.session, self.name, event.peer)
        elif (running := self.sessions.get(event.session)) is not None:
            if isinstance(event, Decided) and event.allowed:
                running.argv = event.argv
            elif isinstance(event, Started):
                running.pid = event.pid
            elif isinstance(event, Ended):
                del self.sessions[event.session]
        if self._audit is not None:
            self._audit(event)

    async def _serve_one(self, channel):
        config = self.config  # the one that holds as this session begins
        about = EndpointDescription(self._called, config.description, config.describe,
                                    expires=self.expires_at, uses_left=self.uses_left,
                                    approval=self.approval is not None)
        return await serve_session(channel, config.policy, config.session_limits, self._shutdown,
                                   decide=self._decide, events=self._event, endpoint=self._called,
                                   description=about, session_id=chained_session_id(channel, self.sessions))


async def _listen(config, log: Callable[[str], None], *, exposed: bool = False):
    try:
        listener = await open_listener(
            config.address,
            tls=config.tls,
            owner=config.owner,
            mode=config.mode,
            allow_unsafe_directory=config.allow_unsafe_directory,
            handshake_timeout=config.session_limits.handshake_timeout,
            # A refused TLS client is one line in the log; the others go on.
            on_handshake_error=lambda error: log(str(error)),
            channel_limits=config.channel_limits,
        )
    except EndpointError as exc:
        raise EndpointStartError(str(exc)) from None
    warning = getattr(listener, "warning", None)
    if warning:
        log(f"warning: {warning}")
    log(f"{'exposed' if exposed else 'listening'} on {bound_address(config.address, listener)}")
    return listener


def bound_address(endpoint, listener) -> str:
    """The endpoint as bound: with the real port when 0 was asked for."""
    from capsudo.transport import TcpEndpoint, TlsEndpoint, UnixEndpoint, VsockEndpoint

    if isinstance(endpoint, UnixEndpoint) or endpoint is None:
        return getattr(listener, "path", str(endpoint))
    port = listener.port
    if isinstance(endpoint, VsockEndpoint):
        return str(VsockEndpoint(endpoint.cid, port))
    kind = TlsEndpoint if isinstance(endpoint, TlsEndpoint) else TcpEndpoint
    return str(kind(endpoint.host, port))
