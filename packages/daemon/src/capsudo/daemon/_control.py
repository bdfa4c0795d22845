"""The control socket of `capsudod --config`: list, grant, renew, revoke, sessions, kill; pending, approve, deny,
watch; and requests.

A Unix socket (`[control] listen`, default /run/capsudo/control) that only
root and the members of `[control] group` may reach: its mode says so
(0660 root:group, or 0600 without a group) and so does every connection's
peer, whose uid the kernel vouches for and which is checked again here. The
protocol is one JSON object per line, a request and then its response, one
request per connection (docs/control.md), except `watch`, whose connection
stays open and carries a line per pending request and per decision. Each
request is a line in the daemon's log, with who asked and what came of it.
Approval commands are further limited to the endpoint's approver group.

`[control] requesters` (a group, or "*" for any local user) lets others
reach the socket for one command only, `request`: a capability asked for
with a reason, kept pending until the operator grants it (`grant
--request ID`) or declines it. The socket is then mode 0666, and the
peer's uid alone decides what it may do.
"""

from __future__ import annotations

import base64
import binascii
import grp
import json
import os
import pwd
import time
from collections.abc import Callable
from dataclasses import dataclass

import trio

from capsudo.core import SECONDS, Option, UsageError, control_record, convert, rfc3339
from capsudo.transport import EndpointError, Owner, open_unix_listener, peer_credentials

from ._config_file import ConfigFileError, read_config_file
from ._approval import DecisionError, may_decide
from ._grants import DEFAULT_STATE, Grant, GrantError, StateDirectory

DEFAULT_CONTROL = "/run/capsudo/control"
CONTROL = "control"
# A request, a script's content included, fits in this; a longer line is refused.
MAX_REQUEST = 4 << 20
REQUEST_TIMEOUT = 10.0
_CONTROL_FIELDS = ("listen", "group", "state", "requesters")
ANY_PEER = "*"
# Pending requests kept at once, and the longest text of one: a requester cannot fill the daemon's memory.
MAX_PENDING = 64
MAX_REQUEST_TEXT = 1024


@dataclass(frozen=True)
class ControlSettings:
    listen: str = DEFAULT_CONTROL
    group: str | None = None
    state: str = DEFAULT_STATE
    requesters: str | None = None


def control_settings(path: str) -> ControlSettings | None:
    """The file's `[control]` table; None when it has none (then no control socket is served)."""
    config, others = read_config_file(path, extra_tables=(CONTROL,))
    table = others.get(CONTROL)
    if table is None:
        return None
    for key, value in table.items():
        if key not in _CONTROL_FIELDS:
            raise ConfigFileError(f"{path}: control.{key}: unknown field (known: {', '.join(_CONTROL_FIELDS)})")
        if not isinstance(value, str) or not value:
            raise ConfigFileError(f"{path}: control.{key}: takes a string, got {value!r}")
    for key in ("group", "requesters"):
        if key in table and table[key] != (ANY_PEER if key == "requesters" else None):
            try:
                grp.getgrnam(table[key])
            except KeyError:
                raise ConfigFileError(f"{path}: control.{key}: no group {table[key]!r} on this system") from None
    return ControlSettings(**table)


class ControlError(Exception):
    """A request that fails; its one line goes back to capsudoctl."""


class ControlServer:
    def __init__(self, settings: ControlSettings, supervisor, *, log: Callable[[str], None]) -> None:
        self.settings = settings
        self.supervisor = supervisor
        self._log = log
        self.state = StateDirectory(settings.state)
        self.grants: dict[str, Grant] = {}
        self._gid = grp.getgrnam(settings.group).gr_gid if settings.group else None
        requesters = settings.requesters
        self._requester_gid = grp.getgrnam(requesters).gr_gid if requesters and requesters != ANY_PEER else None
        #: Capability requests by id, pending or decided, in memory only.
        self.requests: dict[str, dict] = {}
        self._next_request = 1

    # ---- grants kept across restarts ----------------------------------------

    async def restore(self) -> None:
        """The grants of the state directory that still hold, serving again; raises GrantError."""
        self.state.check()
        now = time.time()
        for grant in self.state.load():
            if grant.spent(now):
                self._log(f"grant {grant.name}: expired or spent while the daemon was down; dropped")
                continue
            try:
                await self._start(grant)
            except (GrantError, ControlError) as exc:
                self._log(f"grant {grant.name}: cannot serve it again: {exc}; dropped")
                continue
            self._log(f"grant {grant.name}: resumed, {_left(grant)}")
        self._save()

    def _save(self) -> None:
        self.state.save(list(self.grants.values()))

    def _used(self, endpoint) -> None:
        grant = self.grants.get(endpoint.name)
        if grant is not None:
            grant.uses_left = endpoint.uses_left
            self._save()

    async def _start(self, grant: Grant) -> None:
        from ._endpoint import EndpointStartError

        if grant.name in self.supervisor.running and grant.name not in self.grants:
            raise ControlError(f"an endpoint named {grant.name} exists already")
        if grant.script is not None and not os.path.exists(self.state.script_path(grant.script)):
            raise GrantError(f"its script {grant.script} is gone from {self.state.path}")
        declared = grant.declared()
        try:
            await self.supervisor.add(declared, on_use=self._used)
        except EndpointStartError as exc:
            raise ControlError(str(exc)) from None
        self.grants[grant.name] = grant

    # ---- the socket -----------------------------------------------------------

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        owner, mode = (Owner(0, self._gid), 0o660) if self._gid is not None else (Owner(0, 0), 0o600)
        if self.settings.requesters:
            mode = 0o666  # requesters reach it too; each peer's uid is checked below
        try:
            listener = await open_unix_listener(self.settings.listen, owner=owner, mode=mode)
        except EndpointError as exc:
            raise GrantError(f"control socket: {exc}") from None
        sock = listener.socket
        sock.setblocking(False)
        self._log(f"control socket on {listener.path} (mode {mode:04o}"
                  f"{', group ' + self.settings.group if self._gid is not None else ''})")
        try:
            async with trio.open_nursery() as nursery:
                task_status.started()
                while True:
                    await trio.lowlevel.wait_readable(sock)
                    try:
                        connection, _ = sock.accept()
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError as exc:
                        self._log(f"control socket: accept: {exc.strerror}")
                        await trio.sleep(0.1)
                        continue
                    nursery.start_soon(self._serve_connection, connection)
        finally:
            with trio.CancelScope(shield=True):
                await listener.aclose()

    def _allowed(self, uid: int) -> bool:
        return uid == 0 or _member(uid, self._gid)

    def _may_request(self, uid: int) -> bool:
        return self.settings.requesters == ANY_PEER or _member(uid, self._requester_gid)

    async def _serve_connection(self, connection) -> None:
        connection.setblocking(False)
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(connection))
        async with stream:
            peer = peer_credentials(connection)
            who = f"uid={peer.uid} ({_user_name(peer.uid)}) pid={peer.pid}"
            operator = self._allowed(peer.uid)
            if not operator and not self._may_request(peer.uid):
                self._log(f"control: {who}: refused, not root nor in the control group")
                self._audit("?", None, peer, "not root nor in the control group")
                await _reply(stream, {"ok": False, "error": "permission denied: only root and the members of "
                                      "the control group may use this socket"})
                return
            request: dict = {}
            try:
                with trio.fail_after(REQUEST_TIMEOUT):
                    line = await _read_line(stream)
                parsed = json.loads(line)
                if not isinstance(parsed, dict) or not isinstance(parsed.get("command"), str):
                    raise ControlError('a request is a JSON object with a "command"')
                request = parsed
                if not operator and request["command"] != "request":
                    raise ControlError("permission denied: a requester may only file a request")
                if request["command"] == "watch":
                    self._log(f"control: {who}: watch")
                    self._audit("watch", None, peer, None)
                    return await self._watch(stream, peer.uid)
                response = {"ok": True, **await self._handle(request, peer)}
            except trio.TooSlowError:
                response = {"ok": False, "error": f"no request within {REQUEST_TIMEOUT:g}s"}
            except (ValueError, UnicodeDecodeError):
                response = {"ok": False, "error": "the request is not one line of JSON"}
            except (ControlError, GrantError, UsageError) as exc:
                response = {"ok": False, "error": str(exc)}
            outcome = "ok" if response["ok"] else f"failed: {response['error']}"
            target = (request.get("name") or request.get("session") or request.get("id") or request.get("request")
                      or "")
            self._log(f"control: {who}: {request.get('command', '?')}{' ' + str(target) if target else ''}: {outcome}")
            self._audit(str(request.get("command", "?")), str(target) if target else None, peer,
                        None if response["ok"] else response["error"])
            await _reply(stream, response)

    def _audit(self, command: str, target: str | None, peer, error: str | None) -> None:
        # The request's other fields stay out: a grant's script, a requester's reason.
        self.supervisor.audit.write(control_record(command, target, peer, error))

    # ---- requests -------------------------------------------------------------

    async def _handle(self, request: dict, peer) -> dict:
        command = request["command"]
        if command == "request":
            return self._file_request(request, peer)
        deciding = {"pending": self._pending, "approve": self._approve, "deny": self._deny}.get(command)
        if deciding is not None:
            return deciding(request, peer.uid)
        handler = {"list": self._list, "grant": self._grant, "renew": self._renew, "revoke": self._revoke,
                   "sessions": self._sessions, "kill": self._kill, "requests": self._requests,
                   "decline": self._decline}.get(command)
        if handler is None:
            raise ControlError(f"unknown command {command!r} (known: list, grant, renew, revoke, sessions, kill, "
                               "pending, approve, deny, watch, request, requests, decline)")
        return await handler(request)

    def _file_request(self, request: dict, peer) -> dict:
        texts = {}
        for field in ("what", "why", "for"):
            value = request.get(field)
            if not isinstance(value, str) or not value.strip() or len(value) > MAX_REQUEST_TEXT:
                raise ControlError(f"a request needs {field!r}: a text of 1 to {MAX_REQUEST_TEXT} characters")
            texts[field] = value.strip()
        _duration(texts["for"], "for")
        if sum(entry["state"] == "pending" for entry in self.requests.values()) >= MAX_PENDING:
            raise ControlError(f"{MAX_PENDING} requests are pending already; try again once some are decided")
        ident = f"r{self._next_request}"
        self._next_request += 1
        uid = getattr(peer, "uid", None)
        self.requests[ident] = {"id": ident, **texts, "uid": uid,
                                "user": _user_name(uid) if uid is not None else None,
                                "pid": getattr(peer, "pid", None), "since": rfc3339(time.time()),
                                "state": "pending", "grant": None}
        self._log(f"request {ident} from {self.requests[ident]['user']}: {texts['what']!r} "
                  f"for {texts['for']}, because {texts['why']!r}")
        return {"id": ident, "state": "pending"}

    async def _requests(self, request: dict) -> dict:
        return {"requests": list(self.requests.values())}

    def _open_request(self, ident) -> dict:
        entry = self.requests.get(ident) if isinstance(ident, str) else None
        if entry is None:
            raise ControlError(f"no request {ident}")
        if entry["state"] != "pending":
            raise ControlError(f"request {ident} is {entry['state']} already")
        return entry

    async def _decline(self, request: dict) -> dict:
        entry = self._open_request(request.get("request"))
        entry["state"] = "declined"
        return {"request": entry["id"], "state": "declined"}

    # ---- approval -------------------------------------------------------------

    def _pending(self, request: dict, uid: int) -> dict:
        book = self.supervisor.approvals
        now = book.clock()
        return {"pending": [pending.shown(now) for pending in book.pending.values()
                            if may_decide(uid, pending.approvers)]}

    def _approve(self, request: dict, uid: int) -> dict:
        standing_for = _duration(request["for"], "--for") if "for" in request else None
        return self._decision(request, uid, True, standing_for=standing_for)

    def _deny(self, request: dict, uid: int) -> dict:
        reason = request.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise ControlError("--reason takes a text")
        return self._decision(request, uid, False, reason=reason)

    def _decision(self, request: dict, uid: int, approve: bool, **how) -> dict:
        book = self.supervisor.approvals
        request_id = request.get("id")
        if not isinstance(request_id, str):
            raise ControlError(f"{request['command']} needs a request id")
        pending = book.pending.get(request_id)
        if pending is not None:
            if not may_decide(uid, pending.approvers):
                raise ControlError(f"permission denied: only root and the members of {pending.approvers} "
                                   f"may decide for endpoint {pending.endpoint}")
            if uid != 0 and uid == pending.uid:
                raise ControlError("permission denied: a caller does not approve its own request")
        try:
            decided = book.decide(request_id, approve, _user_name(uid), **how)
        except DecisionError as exc:
            raise ControlError(str(exc)) from None
        return {"id": decided.id, "state": decided.state, "endpoint": decided.endpoint,
                "standing_until": rfc3339(book.clock() + how["standing_for"]) if how.get("standing_for") else None}

    async def _watch(self, stream: trio.SocketStream, uid: int) -> None:
        """Every pending request the watcher may decide, then each new one and each end, a line each."""
        book = self.supervisor.approvals
        send, receive = trio.open_memory_channel(1024)
        visible: set[str] = set()

        def heard(record: dict) -> None:
            if record["event"] == "pending":
                if not may_decide(uid, record["request"]["approvers"]):
                    return
                visible.add(record["request"]["id"])
            elif record["event"] == "ended" and record["id"] not in visible:
                return
            try:
                send.send_nowait(record)
            except trio.WouldBlock:
                send.close()  # a watcher that does not read is dropped, not waited for

        book.listen(heard)
        try:
            for pending in self._pending({}, uid)["pending"]:
                visible.add(pending["id"])
                send.send_nowait({"event": "pending", "request": pending})
            async with trio.open_nursery() as nursery:

                async def until_closed() -> None:
                    while await stream.receive_some(4096):
                        pass
                    nursery.cancel_scope.cancel()

                nursery.start_soon(until_closed)
                await _reply(stream, {"ok": True, "watching": True})
                async for record in receive:
                    await _reply(stream, record)
                nursery.cancel_scope.cancel()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            book.unlisten(heard)

    async def _list(self, request: dict) -> dict:
        endpoints = []
        for name, endpoint in self.supervisor.running.items():
            config = endpoint.config
            policy = config.policy
            grant = self.grants.get(name)
            owner = config.owner
            endpoints.append({
                "name": name,
                "kind": "grant" if grant is not None else "file",
                "address": str(config.address),
                "program": list(policy.program),
                "pins": {"command": policy.fixed_arguments, "environment": policy.fixed_environment},
                "user": policy.run_as.user,
                "owner": None if owner is None else {"uid": owner.uid, "gid": owner.gid},
                "mode": f"{config.mode:04o}",
                "expires": rfc3339(endpoint.expires_at) if endpoint.expires_at is not None else None,
                "uses_left": endpoint.uses_left,
                "sessions": len(endpoint.sessions),
                "state": endpoint.ended or "accepting",
                "script": grant.script if grant is not None else None,
            })
        return {"endpoints": endpoints}

    async def _grant(self, request: dict) -> dict:
        name = _name(request)
        answered = self._open_request(request["request"]) if "request" in request else None
        if name in self.supervisor.running:
            raise ControlError(f"an endpoint named {name} exists already (revoke it first)")
        fields = request.get("fields")
        if not isinstance(fields, dict) or "endpoint" not in fields:
            raise ControlError("a grant needs its fields, --listen among them")
        fields = dict(fields)
        expires_at = None
        if "for" in request:
            expires_at = time.time() + _duration(request["for"], "--for")
        elif "expires" in fields:
            raise ControlError("a grant's lifetime is --for DURATION")
        uses = fields.pop("uses", None)
        if uses is not None:
            uses = convert(Option("uses", "integer", minimum=1), uses, "--uses")
        at_expiry = fields.pop("at-expiry", "hang-up")
        digest = None
        script = request.get("script")
        if script is not None:
            try:
                content = base64.b64decode(script, validate=True)
            except (binascii.Error, TypeError):
                raise ControlError("the script's content is not base64") from None
            digest, path = self.state.store_script(content)
            fields["program"] = [path, *fields.get("program", [])]
        grant = Grant(name, fields, expires_at, uses, digest, at_expiry)
        await self._start(grant)
        self._save()
        if answered is not None:
            answered.update(state="granted", grant=name)
        return {"name": name, "request": answered["id"] if answered else None, "address": fields["endpoint"], "expires": rfc3339(expires_at) if expires_at else None,
                "uses_left": uses, "script": digest}

    async def _renew(self, request: dict) -> dict:
        name = _name(request)
        grant = self.grants.get(name)
        endpoint = self.supervisor.running.get(name)
        if grant is None or endpoint is None:
            raise ControlError(f"no grant named {name}")
        if endpoint.ended is not None:
            raise ControlError(f"grant {name} has ended ({endpoint.ended}); grant it again")
        if "for" not in request:
            raise ControlError("renew needs --for DURATION")
        grant.expires_at = time.time() + _duration(request["for"], "--for")
        uses = request.get("uses")
        if uses is not None:
            grant.uses_left = convert(Option("uses", "integer", minimum=1), uses, "--uses")
        endpoint.renew(grant.expires_at, grant.uses_left if uses is not None else None)
        self._save()
        return {"name": name, "expires": rfc3339(grant.expires_at), "uses_left": endpoint.uses_left}

    async def _revoke(self, request: dict) -> dict:
        name = _name(request)
        if name not in self.grants:
            raise ControlError(f"no grant named {name}" + (" (a file's endpoint: remove it from the file)"
                                                          if name in self.supervisor.running else ""))
        del self.grants[name]
        self._save()
        endpoint = self.supervisor.remove(name)
        if endpoint is not None:
            endpoint.revoke()
            with trio.move_on_after(endpoint.config.session_limits.hangup_grace + 2):
                await endpoint.served.stopped.wait()
        return {"name": name}

    async def _sessions(self, request: dict) -> dict:
        sessions = []
        for endpoint in self.supervisor.running.values():
            for running in endpoint.sessions.values():
                peer = running.peer
                sessions.append({"id": running.id, "endpoint": running.endpoint,
                                 "uid": getattr(peer, "uid", None), "pid": getattr(peer, "pid", None),
                                 "user": _user_name(peer.uid) if peer is not None else None,
                                 "argv": list(running.argv), "program_pid": running.pid,
                                 "since": rfc3339(running.since)})
        return {"sessions": sessions}

    async def _kill(self, request: dict) -> dict:
        session = request.get("session")
        if not isinstance(session, str):
            raise ControlError("kill needs a session id")
        for endpoint in self.supervisor.running.values():
            if session in endpoint.sessions:
                if not endpoint.kill(session):
                    raise ControlError(f"session {session} runs no program yet")
                return {"session": session}
        raise ControlError(f"no session {session}")


def _name(request: dict) -> str:
    from ._config_file import ENDPOINT_NAME

    name = request.get("name")
    if not isinstance(name, str) or not ENDPOINT_NAME.match(name):
        raise ControlError(f"invalid name {name!r}: letters, digits and _ . @ -, up to 64")
    return name


def _duration(raw, label: str) -> float:
    return convert(Option("for", SECONDS, minimum=0.001), raw, label)


def _left(grant: Grant) -> str:
    expires = f"until {rfc3339(grant.expires_at)}" if grant.expires_at is not None else "without expiry"
    uses = f"{grant.uses_left} use(s) left" if grant.uses_left is not None else "unlimited uses"
    return f"{expires}, {uses}"


def _member(uid: int, gid: int | None) -> bool:
    if gid is None:
        return False
    try:
        user = pwd.getpwuid(uid)
    except KeyError:
        return False
    return gid in os.getgrouplist(user.pw_name, user.pw_gid)


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


async def _read_line(stream: trio.SocketStream) -> str:
    buffer = bytearray()
    while b"\n" not in buffer:
        chunk = await stream.receive_some(65536)
        if not chunk:
            break
        buffer += chunk
        if len(buffer) > MAX_REQUEST:
            raise ControlError(f"the request is longer than {MAX_REQUEST} bytes")
    return buffer.partition(b"\n")[0].decode("utf-8")


async def _reply(stream: trio.SocketStream, response: dict) -> None:
    try:
        await stream.send_all(json.dumps(response, separators=(",", ":")).encode() + b"\n")
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
