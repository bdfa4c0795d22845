"""An audit trail: every event of every session, one JSON object per line, appended to a file.

Each line carries an RFC 3339 time in UTC, the event, the session id that
ties a session's lines together, and the endpoint's name. The peer is
described once, at `accepted` (pid, uid and user name, gid, executable,
security label); what the client asked for and what actually ran are
`requested` and `decided`; `ended` has the status and the duration.
Environment values never appear, only names: the daemon's own pinned
entries are in its configuration, and a client's values may be secrets.

The file is opened for appending and written one whole line per write(), so
lines from several endpoints never interleave; `reopen()` (on SIGHUP) lets
logrotate move the file away.
"""

from __future__ import annotations

import json
import os
import pwd
from datetime import datetime, timezone

from ._events import Accepted, Decided, Ended, Pending, Requested, SessionEvent, Started


_LIFETIME_ENDS = ("expired", "spent", "revoked")


def _rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _user_name(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def _executable(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None


def audit_record(event: SessionEvent, endpoint: str | None) -> dict:
    """The JSON object of one event."""
    record: dict = {"time": _rfc3339(event.time), "session": event.session, "endpoint": endpoint}
    if isinstance(event, Accepted):
        record["event"] = "accepted"
        record["where"] = event.where
        peer = event.peer
        if peer is not None:
            record["peer"] = {"pid": peer.pid, "uid": peer.uid, "user": _user_name(peer.uid), "gid": peer.gid,
                              "executable": _executable(peer.pid), "label": peer.label}
    elif isinstance(event, Requested):
        record.update(event="requested", argv=list(event.argv), env_names=list(event.env_names),
                      interactive=event.interactive)
    elif isinstance(event, Decided):
        # allowed, refused, or why the endpoint no longer holds: expired, spent, revoked.
        code = event.reason.code if event.reason is not None else None
        decision = event.decision or ("allowed" if event.allowed else code if code in _LIFETIME_ENDS else "refused")
        record.update(event="decided", allowed=event.allowed, decision=decision)
        if event.approver is not None:
            record["approver"] = event.approver
        if event.allowed:
            record.update(argv=list(event.argv), env_names=list(event.env_names))
        elif event.reason is not None:
            record["reason"] = event.reason.text
    elif isinstance(event, Pending):
        record.update(event="pending", request=event.request, deadline=_rfc3339(event.deadline))
    elif isinstance(event, Started):
        record.update(event="started", pid=event.pid, executable=event.executable)
    elif isinstance(event, Ended):
        record.update(event="ended", status=event.status, outcome=event.outcome,
                      duration=round(event.duration, 6))
    return record


class AuditFile:
    """An event sink appending each event's line to `path` (created 0600 if absent)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = self._open()

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)

    def sink(self, endpoint: str | None):
        """The sink for one endpoint's sessions."""
        return lambda event: self.write(audit_record(event, endpoint))

    def write(self, record: dict) -> None:
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
        # One write() of the whole line: O_APPEND makes it land whole at the end.
        os.write(self._fd, line.encode("utf-8", "backslashreplace"))

    def reopen(self) -> None:
        """After logrotate moved the file: the next line goes to a new one at `path`."""
        fd = self._open()
        os.close(self._fd)
        self._fd = fd

    def close(self) -> None:
        os.close(self._fd)


class AuditFiles:
    """A daemon's audit files, each opened once however many endpoints write to it."""

    def __init__(self) -> None:
        self._files: dict[str, AuditFile] = {}

    def sink(self, paths: tuple[str, ...], endpoint: str | None):
        """The sink writing `endpoint`'s events to every file of `paths`; None for none. Raises OSError."""
        if not paths:
            return None
        files = [self._file(path) for path in paths]

        def write(event: SessionEvent) -> None:
            record = audit_record(event, endpoint)
            for file in files:
                file.write(record)

        return write

    def _file(self, path: str) -> AuditFile:
        if path not in self._files:
            self._files[path] = AuditFile(path)
        return self._files[path]

    def reopen(self) -> None:
        for file in self._files.values():
            file.reopen()

    def close(self) -> None:
        for file in self._files.values():
            file.close()
        self._files.clear()
