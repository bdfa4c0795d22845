"""Requests held for a person's decision: the approval state machine, standing approvals, who may decide.

A session of an `approve` endpoint becomes a pending request after `End`,
named by an id of 128 random bits that is bound to that one session. It
ends exactly once: approved, denied, timed out (nobody decided in time) or
withdrawn (the client left). A decision names one request by its id; a
decision for a request that has ended, or that never was, changes nothing
and says so. "Approve for N minutes" leaves a standing approval for the same
endpoint and the same caller uid, until its time runs out. Whoever watches
(`capsudoctl watch`) hears of each request as it arrives and as it ends.

The book itself does not wait: `HeldRequest` is what a session awaits,
and the clock is a parameter, so that a model test can drive the very code
the daemon runs.
"""

from __future__ import annotations

import os
import pwd
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import trio

from capsudo.core import Allow, Option, Refuse, UsageError, approval_options, convert
from capsudo.proto import Reason

PENDING = "pending"
APPROVED = "approved"
DENIED = "denied"
TIMED_OUT = "timed out"
WITHDRAWN = "withdrawn"
ENDS = (APPROVED, DENIED, TIMED_OUT, WITHDRAWN)
# Ended requests remembered for their late deciders; older ones are "no pending request".
REMEMBERED = 4096


@dataclass(frozen=True)
class ApprovalSettings:
    timeout: float
    approvers: str


def approval_settings(values: Mapping[str, object], labels: Mapping[str, str]) -> ApprovalSettings | None:
    """The approval an endpoint's fields ask for; None without `approve`. Raises UsageError."""
    options: dict[str, Option] = {option.name: option for option in approval_options()}
    typed = {key: convert(option, values[key], labels.get(key, key)) if key in values else option.default
             for key, option in options.items()}
    if not typed["approve"]:
        return None
    import grp

    try:
        grp.getgrnam(typed["approvers"])
    except KeyError:
        raise UsageError(f"{labels.get('approvers', 'approvers')}: no group {typed['approvers']!r} "
                         "on this system") from None
    return ApprovalSettings(typed["approval-timeout"], typed["approvers"])


class DecisionError(Exception):
    """A decision that changes nothing (no such request, already decided, not yours to decide); one line."""


@dataclass
class PendingRequest:
    id: str
    session: str
    endpoint: str
    #: The caller's uid: a standing approval covers this uid only.
    uid: int
    approvers: str
    deadline: float
    #: What an approver is shown (strings as the client sent them; escaped where shown).
    details: dict = field(default_factory=dict)
    state: str = PENDING
    approver: str | None = None
    reason: str | None = None
    _ended: trio.Event = field(default_factory=trio.Event)

    def shown(self, now: float) -> dict:
        return {"id": self.id, "session": self.session, "endpoint": self.endpoint, "uid": self.uid,
                "approvers": self.approvers, "state": self.state, "left": max(0.0, self.deadline - now), "approver": self.approver,
                "reason": self.reason, **self.details}


@dataclass(frozen=True)
class Standing:
    endpoint: str
    uid: int
    until: float
    by: str


Listener = Callable[[dict], None]


class ApprovalBook:
    """Every pending request of the daemon and its standing approvals."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.pending: dict[str, PendingRequest] = {}
        self.standing: list[Standing] = []
        self._listeners: set[Listener] = set()
        #: How the latest requests ended, by id, so that a late decision is told which way.
        self.ended: dict[str, str] = {}

    # ---- requests -------------------------------------------------------------

    def covering(self, endpoint: str, uid: int) -> Standing | None:
        """The standing approval that covers this endpoint for this caller now, if one."""
        now = self.clock()
        self.standing = [standing for standing in self.standing if standing.until > now]
        return next((standing for standing in self.standing
                     if standing.endpoint == endpoint and standing.uid == uid), None)

    def hold(self, session: str, endpoint: str, uid: int, timeout: float, approvers: str,
             details: dict | None = None) -> PendingRequest:
        request = PendingRequest(secrets.token_hex(16), session, endpoint, uid, approvers,
                                 self.clock() + timeout, dict(details or {}))
        self.pending[request.id] = request
        self._tell({"event": "pending", "request": request.shown(self.clock())})
        return request

    def decide(self, request_id: str, approve: bool, by: str, *, reason: str | None = None,
               standing_for: float | None = None) -> PendingRequest:
        """Approve or deny one pending request; DecisionError when there is none such to decide."""
        request = self.pending.get(request_id)
        if request is None:
            state = self.ended.get(request_id)
            raise DecisionError(f"request {request_id} was {state} already: nothing done" if state is not None
                                else f"no pending request {request_id}: nothing done")
        if self.clock() >= request.deadline:
            self._end(request, TIMED_OUT)
            raise DecisionError(f"request {request_id} timed out before the decision: nothing done")
        self._end(request, APPROVED if approve else DENIED, by, reason)
        if approve and standing_for is not None:
            self.standing.append(Standing(request.endpoint, request.uid, self.clock() + standing_for, by))
            self._tell({"event": "standing", "endpoint": request.endpoint, "uid": request.uid,
                        "until": self.clock() + standing_for, "by": by})
        return request

    def expire(self, request: PendingRequest) -> None:
        if request.state == PENDING:
            self._end(request, TIMED_OUT)

    def withdraw(self, request: PendingRequest) -> None:
        if request.state == PENDING:
            self._end(request, WITHDRAWN)

    def _end(self, request: PendingRequest, state: str, by: str | None = None, reason: str | None = None) -> None:
        request.state, request.approver, request.reason = state, by, reason
        del self.pending[request.id]
        self.ended[request.id] = state
        if len(self.ended) > REMEMBERED:
            del self.ended[next(iter(self.ended))]  # the oldest: a dict keeps insertion order
        request._ended.set()
        self._tell({"event": "ended", "id": request.id, "state": state, "approver": by, "reason": reason})

    # ---- watchers ---------------------------------------------------------------

    def listen(self, listener: Listener) -> None:
        self._listeners.add(listener)

    def unlisten(self, listener: Listener) -> None:
        self._listeners.discard(listener)

    def _tell(self, record: dict) -> None:
        for listener in list(self._listeners):
            listener(record)


class HeldRequest:
    """What a session awaits: its pending request's outcome, as the session's decision.

    `allowed` is what runs on approval; `on_approved` may still refuse (the
    endpoint expired or was spent meanwhile) and counts the use.
    """

    def __init__(self, book: ApprovalBook, request: PendingRequest, allowed: Allow,
                 on_approved: Callable[[Allow], Allow | Refuse]) -> None:
        self.book = book
        self.request = request
        self._allowed = allowed
        self._on_approved = on_approved

    async def outcome(self) -> Allow | Refuse:
        request = self.request
        # The time left, on the monotonic clock: the wall clock may jump.
        try:
            with trio.move_on_after(max(0.0, request.deadline - self.book.clock())):
                await request._ended.wait()
        except trio.Cancelled:
            # The daemon stops, or the session's task went: nobody is left to run it.
            self.book.withdraw(request)
            raise
        self.book.expire(request)
        if request.state == APPROVED:
            return self._on_approved(Allow(self._allowed.argv, self._allowed.env, approver=request.approver))
        if request.state == DENIED:
            text = f"request {request.id[:8]} was denied by {request.approver}"
            if request.reason:
                text += f": {request.reason}"
            return Refuse(Reason("denied", text), decision=DENIED, approver=request.approver)
        return Refuse(Reason("approval-timeout", f"request {request.id[:8]} was not approved within "
                                                 f"{_seconds(request)}: denied"), decision=TIMED_OUT)

    def withdraw(self) -> None:
        self.book.withdraw(self.request)


def _seconds(request: PendingRequest) -> str:
    timeout = request.details.get("timeout")
    return f"{timeout:g}s" if isinstance(timeout, (int, float)) else "its time"


def may_decide(uid: int, group: str) -> bool:
    """Root, or a member of `group` by the group database (by name or as primary group)."""
    if uid == 0:
        return True
    import grp

    try:
        user = pwd.getpwuid(uid)
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        return False
    return gid in os.getgrouplist(user.pw_name, user.pw_gid)


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def caller_details(pid: int) -> dict:
    """What /proc says of the caller: its executable, full command line, cgroup and systemd unit."""
    def read(name: str) -> bytes | None:
        try:
            with open(f"/proc/{pid}/{name}", "rb") as file:
                return file.read()
        except OSError:
            return None

    try:
        executable = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        executable = None
    cmdline = read("cmdline")
    cgroup_text = read("cgroup")
    cgroup = None
    if cgroup_text:
        # cgroup v2: "0::/system.slice/foo.service"; else the first hierarchy's path.
        lines = cgroup_text.decode("utf-8", "replace").splitlines()
        cgroup = next((line.split(":", 2)[2] for line in lines if line.startswith("0::")),
                      lines[0].split(":", 2)[-1] if lines else None)
    unit = None
    if cgroup:
        unit = next((part for part in reversed(cgroup.split("/"))
                     if part.endswith((".service", ".scope"))), None)
    return {"executable": executable,
            "cmdline": [word.decode("utf-8", "surrogateescape") for word in cmdline.split(b"\0")[:-1]]
            if cmdline else None,
            "cgroup": cgroup, "unit": unit}
