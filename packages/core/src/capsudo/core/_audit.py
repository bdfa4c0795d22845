"""An audit trail: every event of every session as one JSON object, to a file, syslog or the journal.

Each line carries an RFC 3339 time in UTC, the event, the session id that
ties a session's lines together, and the endpoint's name. The peer is
described once, at `accepted` (pid, uid and user name, gid, executable,
security label); what the client asked for and what actually ran are
`requested` and `decided`; `ended` has the status and the duration.
Environment values never appear, only names: the daemon's own pinned
entries are in its configuration, and a client's values may be secrets.

A sink is named by an `audit` entry: a path is a file, opened for appending
and written one whole line per write(), so lines from several endpoints
never interleave, and `reopen()` (on SIGHUP) lets logrotate move it away;
`"syslog"` sends each record as the message of a syslog datagram (facility
authpriv) to /dev/log; `"journal"` sends it to journald's native socket
with the session, the event and the endpoint as fields of their own. The
environment variables CAPSUDO_SYSLOG_SOCKET and CAPSUDO_JOURNAL_SOCKET name
other sockets (a test's listener).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import pwd
import socket
import struct
import time
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
        if event.dropped_argv or event.dropped_env_names:
            record["dropped"] = {"argv": list(event.dropped_argv), "env_names": list(event.dropped_env_names)}
        if event.allowed:
            record.update(argv=list(event.argv), env_names=list(event.env_names))
        elif event.reason is not None:
            record["reason"] = event.reason.text
    elif isinstance(event, Pending):
        record.update(event="pending", request=event.request, deadline=_rfc3339(event.deadline))
    elif isinstance(event, Started):
        record.update(event="started", pid=event.pid, executable=event.executable, argv=list(event.argv))
    elif isinstance(event, Ended):
        record.update(event="ended", status=event.status, outcome=event.outcome,
                      duration=round(event.duration, 6))
    return record


def control_record(command: str, target: str | None, peer, error: str | None) -> dict:
    """The JSON object of one control-socket request: who asked for what, and whether it was done."""
    return {"time": _rfc3339(time.time()), "session": None, "endpoint": target or None, "event": "control",
            "command": command, "peer": {"pid": peer.pid, "uid": peer.uid, "user": _user_name(peer.uid),
                                         "gid": peer.gid},
            "done": error is None, **({"error": error} if error is not None else {})}


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
        line = _line(record) + "\n"
        # One write() of the whole line: O_APPEND makes it land whole at the end.
        os.write(self._fd, line.encode("utf-8", "backslashreplace"))

    def reopen(self) -> None:
        """After logrotate moved the file: the next line goes to a new one at `path`."""
        fd = self._open()
        os.close(self._fd)
        self._fd = fd

    def close(self) -> None:
        os.close(self._fd)


#: syslog's facility for security and authorization messages, and the severities used.
_AUTHPRIV = 10
_NOTICE, _INFO = 5, 6
#: How long a send may wait for a slow log daemon before the record is dropped.
_SEND_TIMEOUT = 0.5


def _severity(record: dict) -> int:
    # A refusal, or a control request that was refused, deserves a reader's eye.
    return _NOTICE if record.get("allowed") is False or record.get("done") is False else _INFO


def _line(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


class _DatagramSink:
    """Records sent as datagrams to a local log daemon's socket; a send that fails is dropped, not raised."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._socket = self._connect()

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        sock.settimeout(_SEND_TIMEOUT)
        try:
            sock.connect(self.path)
        except OSError as exc:
            sock.close()
            raise OSError(exc.errno, exc.strerror, self.path) from None
        return sock

    def write(self, record: dict) -> None:
        data = self.datagram(record)
        try:
            self._send(data)
        except OSError:
            # The log daemon restarted: its socket is a new one.
            try:
                self._socket.close()
                self._socket = self._connect()
                self._send(data)
            except OSError:
                pass

    def _send(self, data: bytes) -> None:
        self._socket.send(data)

    def datagram(self, record: dict) -> bytes:
        raise NotImplementedError

    def reopen(self) -> None:
        pass

    def close(self) -> None:
        self._socket.close()


class SyslogSink(_DatagramSink):
    """Each record as the message of a classic `<PRI>TIMESTAMP capsudod[PID]: ` line, as syslog(3) sends it."""

    def __init__(self, path: str | None = None) -> None:
        super().__init__(path or os.environ.get("CAPSUDO_SYSLOG_SOCKET") or "/dev/log")

    def datagram(self, record: dict) -> bytes:
        stamp = time.strftime("%b %e %H:%M:%S", time.localtime())
        header = f"<{_AUTHPRIV * 8 + _severity(record)}>{stamp} capsudod[{os.getpid()}]: "
        return (header + _line(record)).encode("utf-8", "backslashreplace")


def _journal_field(name: str, value: str) -> bytes:
    data = value.encode("utf-8", "backslashreplace")
    if b"\n" in data:
        # The native protocol's binary form: the name, a newline, the length as 64-bit little-endian, the value.
        return name.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
    return name.encode() + b"=" + data + b"\n"


class JournalSink(_DatagramSink):
    """Each record to journald's native socket: the JSON as MESSAGE, the session, event and endpoint as fields."""

    def __init__(self, path: str | None = None) -> None:
        super().__init__(path or os.environ.get("CAPSUDO_JOURNAL_SOCKET") or "/run/systemd/journal/socket")

    def datagram(self, record: dict) -> bytes:
        fields = {"MESSAGE": _line(record), "PRIORITY": str(_severity(record)), "SYSLOG_FACILITY": str(_AUTHPRIV),
                  "SYSLOG_IDENTIFIER": "capsudod", "CAPSUDO_EVENT": record.get("event") or ""}
        if record.get("session") is not None:
            fields["CAPSUDO_SESSION"] = record["session"]
        if record.get("endpoint") is not None:
            fields["CAPSUDO_ENDPOINT"] = record["endpoint"]
        return b"".join(_journal_field(name, value) for name, value in fields.items())

    def _send(self, data: bytes) -> None:
        try:
            self._socket.send(data)
        except OSError as exc:
            if exc.errno != errno.EMSGSIZE:
                raise
            # Too big for one datagram: journald reads it from a sealed memfd passed along.
            fd = os.memfd_create("capsudo-audit", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
            try:
                os.write(fd, data)
                fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
                            | fcntl.F_SEAL_SEAL)
                socket.send_fds(self._socket, [b""], [fd])
            finally:
                os.close(fd)


#: The `audit` entries that name a log daemon rather than a file.
AUDIT_SERVICES = {"syslog": SyslogSink, "journal": JournalSink}


class AuditFiles:
    """A daemon's audit sinks, each opened once however many endpoints write to it."""

    def __init__(self) -> None:
        self._files: dict[str, AuditFile | _DatagramSink] = {}

    def sink(self, paths: tuple[str, ...], endpoint: str | None):
        """The sink writing `endpoint`'s events to every entry of `paths`; None for none. Raises OSError."""
        if not paths:
            return None
        files = [self._file(path) for path in paths]

        def write(event: SessionEvent) -> None:
            record = audit_record(event, endpoint)
            for file in files:
                file.write(record)

        return write

    def write(self, record: dict) -> None:
        """One record that belongs to no session (a control request) to every sink opened so far."""
        for file in self._files.values():
            file.write(record)

    def _file(self, path: str) -> AuditFile | _DatagramSink:
        if path not in self._files:
            service = AUDIT_SERVICES.get(path)
            self._files[path] = service() if service is not None else AuditFile(path)
        return self._files[path]

    def reopen(self) -> None:
        for file in self._files.values():
            file.reopen()

    def close(self) -> None:
        for file in self._files.values():
            file.close()
        self._files.clear()
