"""Grants through the control socket: the real `capsudod --config`, the real `capsudoctl` and `capsudo`.

Each test writes a file with a `[control]` table, starts the daemon on it,
and acts as an operator would: grants, uses, lists, renews, revokes; a
scratch user stands for whoever must not reach the control socket.
"""

from __future__ import annotations

import grp
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from .daemon_process import BIN, CAPSUDO, wait_for_path
from .test_config_file_daemon import FileDaemon, file_daemons  # noqa: F401 (a fixture)

CAPSUDOCTL = str(BIN / "capsudoctl")
SOURCES = [str(path) for path in sorted((Path(__file__).parents[2] / "packages").glob("*/src"))]
pytestmark = pytest.mark.root


@pytest.fixture
def control(sock_dir, file_daemons):  # noqa: F811
    """A daemon serving one file endpoint and a control socket; returns (daemon, ctl, directory)."""
    directory = Path(sock_dir)
    (directory / "state").mkdir(mode=0o700)
    config = directory / "capsudo.toml"
    config.write_text(f'[control]\nlisten = "{directory}/control"\nstate = "{directory}/state"\n\n'
                      f'[endpoint.hello]\nlisten = "{directory}/hello"\ncommand = ["echo", "hello"]\n'
                      f'pin = "command"\nclient-environment = false\naudit = ["{directory}/audit.jsonl"]\n')

    def start() -> FileDaemon:
        daemon = FileDaemon(config, directory / "daemon.log")
        file_daemons.append(daemon)
        wait_for_path(str(directory / "control"))
        return daemon

    def ctl(*args: str, **options) -> subprocess.CompletedProcess:
        return subprocess.run([CAPSUDOCTL, "-S", str(directory / "control"), *args], capture_output=True,
                              text=True, timeout=20, **options)

    return start, ctl, directory


def run_client(socket: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CAPSUDO, "-S", str(socket), *args], capture_output=True, text=True, timeout=20)


def listed(ctl, name: str) -> dict:
    result = ctl("--json", "list")
    assert result.returncode == 0, result.stderr
    return next(entry for entry in json.loads(result.stdout)["endpoints"] if entry["name"] == name)


def test_a_grant_is_used_listed_renewed_and_expires(control):
    start, ctl, directory = control
    start()
    granted = ctl("grant", "g", "--listen", str(directory / "g"), "--for", "2s", "-E", "--", "echo", "granted")
    assert granted.returncode == 0, granted.stderr
    assert run_client(directory / "g", "once").stdout == "granted once\n"
    entry = listed(ctl, "g")
    assert entry["kind"] == "grant" and entry["state"] == "accepting" and entry["expires"]
    assert ctl("renew", "g", "--for", "3s").returncode == 0
    time.sleep(2.2)  # past the first expiry, within the renewed one
    assert run_client(directory / "g", "twice").stdout == "granted twice\n"
    deadline = time.monotonic() + 5
    while os.path.exists(directory / "g"):
        assert time.monotonic() < deadline, "the socket outlived its grant"
        time.sleep(0.05)
    assert listed(ctl, "g")["state"] == "expired"
    assert run_client(directory / "g").returncode != 0


def test_a_grant_of_two_uses_refuses_the_third(control):
    start, ctl, directory = control
    start()
    assert ctl("grant", "two", "--listen", str(directory / "two"), "--uses", "2", "--", "true").returncode == 0
    assert listed(ctl, "two")["uses_left"] == 2
    assert run_client(directory / "two").returncode == 0
    assert listed(ctl, "two")["uses_left"] == 1
    assert run_client(directory / "two").returncode == 0
    third = run_client(directory / "two")
    assert third.returncode != 0
    assert not os.path.exists(directory / "two")
    assert listed(ctl, "two")["state"] == "spent"


def test_revoke_hangs_the_running_program_up_and_removes_the_socket(control):
    start, ctl, directory = control
    start()
    assert ctl("grant", "r", "--listen", str(directory / "r"), "--", "sleep").returncode == 0
    client = subprocess.Popen([CAPSUDO, "-S", str(directory / "r"), "30"], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 5
    while listed(ctl, "r")["sessions"] == 0 or not json.loads(ctl("--json", "sessions").stdout)["sessions"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    sessions = json.loads(ctl("--json", "sessions").stdout)["sessions"]
    assert sessions[0]["endpoint"] == "r" and sessions[0]["argv"] == ["sleep", "30"]
    assert ctl("revoke", "r").returncode == 0
    assert not os.path.exists(directory / "r")
    status = client.wait(10)
    assert status == 128 + signal.SIGHUP
    assert "this capability was revoked" in client.stderr.read()


def test_a_script_grant_runs_the_approved_content(control):
    start, ctl, directory = control
    start()
    script = directory / "job.sh"
    script.write_text('#!/bin/sh\necho approved "$@"\n')
    script.chmod(0o755)
    granted = ctl("grant", "s", "--listen", str(directory / "s"), "--script", str(script))
    assert granted.returncode == 0, granted.stderr
    import hashlib

    digest = hashlib.sha256(script.read_bytes()).hexdigest()
    assert digest in granted.stdout
    script.write_text('#!/bin/sh\necho changed\n')
    assert run_client(directory / "s", "x").stdout == "approved x\n"
    assert listed(ctl, "s")["script"] == digest


def test_grants_survive_a_kill_and_restart_with_their_uses(control):
    start, ctl, directory = control
    daemon = start()
    assert ctl("grant", "k", "--listen", str(directory / "k"), "--uses", "3", "--for", "1m", "--", "true").returncode == 0
    assert ctl("grant", "short", "--listen", str(directory / "short"), "--for", "1s", "--", "true").returncode == 0
    assert run_client(directory / "k").returncode == 0
    state = directory / "state" / "grants.json"
    assert (state.stat().st_mode & 0o777) == 0o600 and state.stat().st_uid == 0
    daemon.process.kill()
    daemon.process.wait()
    time.sleep(1.1)
    for leftover in ("control", "k", "short", "hello"):
        (directory / leftover).unlink(missing_ok=True)  # a killed daemon leaves its sockets behind
    start()
    wait_for_path(str(directory / "k"))
    names = {entry["name"]: entry for entry in json.loads(ctl("--json", "list").stdout)["endpoints"]}
    assert names["k"]["uses_left"] == 2
    assert "short" not in names
    assert run_client(directory / "k").returncode == 0


def test_the_control_socket_refuses_a_user_outside_its_group(control, scratch_user):
    start, ctl, directory = control
    name, uid, gid = scratch_user
    # A group the scratch user is not a member of.
    group = next(entry for entry in grp.getgrall() if entry.gr_gid not in (0, gid) and name not in entry.gr_mem)
    config = directory / "capsudo.toml"
    config.write_text(config.read_text().replace("[control]\n", f'[control]\ngroup = "{group.gr_name}"\n'))
    start()
    assert os.stat(directory / "control").st_mode & 0o777 == 0o660
    assert os.stat(directory / "control").st_gid == group.gr_gid
    os.chmod(directory, 0o755)
    # The test's interpreter may live where the scratch user cannot go: the system's, on the source tree.
    as_user = dict(user=uid, group=gid, env={"PYTHONPATH": ":".join(SOURCES)}, capture_output=True, text=True,
                   timeout=20)
    command = ["/usr/bin/python3", "-m", "capsudo.ctl", "-S", str(directory / "control"), "list"]
    # By the socket's permissions: the user's own group cannot open it.
    refused = subprocess.run(command, extra_groups=[], **as_user)
    assert refused.returncode == 3 and "Permission denied" in refused.stderr, refused.stderr
    # By the peer's credentials: a process that holds the group without being its member.
    refused = subprocess.run(command, extra_groups=[group.gr_gid], **as_user)
    assert refused.returncode == 1 and "permission denied" in refused.stderr, refused.stderr
    assert ctl("list").returncode == 0


def test_a_granted_session_is_in_the_audit_with_its_id_and_user(control):
    start, ctl, directory = control
    start()
    audit = directory / "audit.jsonl"
    assert ctl("grant", "a", "--listen", str(directory / "a"), "--uses", "1", "--audit", str(audit),
               "--", "echo").returncode == 0
    assert run_client(directory / "a", "hi").returncode == 0
    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    events = [line for line in lines if line["endpoint"] == "a" and line["event"] != "control"]
    assert [line["event"] for line in events] == ["accepted", "requested", "decided", "started", "ended"]
    # The control request that made the grant is a line of the same audit.
    (control,) = [line for line in lines if line["event"] == "control"]
    assert (control["command"], control["endpoint"], control["done"], control["peer"]["user"]) == ("grant", "a", True,
                                                                                                    "root")
    assert len({line["session"] for line in events}) == 1
    assert events[0]["peer"]["user"] == "root"
    assert events[2]["decision"] == "allowed"


def _as_user(user, directory: Path, request: dict) -> dict:
    """One control request sent by the scratch user, with the system's python3 and nothing of ours."""
    _, uid, gid = user
    code = ("import json, socket, sys\ns = socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[1])\n"
            "s.sendall(sys.argv[2].encode() + b'\\n')\nprint(s.makefile().readline())")
    result = subprocess.run(["/usr/bin/python3", "-c", code, str(directory / "control"), json.dumps(request)],
                            user=uid, group=gid, extra_groups=[], capture_output=True, text=True, timeout=20)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_requester_files_a_request_that_the_operator_lists_and_grants(control, scratch_user):
    start, ctl, directory = control
    config = directory / "capsudo.toml"
    config.write_text(config.read_text().replace("[control]\n", '[control]\nrequesters = "*"\n'))
    start()
    os.chmod(directory, 0o755)
    filed = _as_user(scratch_user, directory, {"command": "request", "what": "restart nginx", "why": "it hangs",
                                               "for": "10m"})
    assert filed == {"ok": True, "id": "r1", "state": "pending"}
    # A requester may do nothing else.
    assert _as_user(scratch_user, directory, {"command": "list"})["ok"] is False
    listed_requests = json.loads(ctl("--json", "requests").stdout)["requests"]
    assert [(entry["id"], entry["what"], entry["user"], entry["state"]) for entry in listed_requests] == [
        ("r1", "restart nginx", scratch_user[0], "pending")]
    granted = ctl("grant", "nginx", "--request", "r1", "--listen", str(directory / "nginx"), "--for", "10m",
                  "--", "echo", "restarted")
    assert granted.returncode == 0 and "answering request r1" in granted.stdout, granted.stderr
    assert "granted as nginx" in ctl("requests").stdout
    assert run_client(directory / "nginx").stdout == "restarted\n"
    again = ctl("grant", "other", "--request", "r1", "--listen", str(directory / "other"), "--", "true")
    assert again.returncode == 1 and "request r1 is granted already" in again.stderr
    assert _as_user(scratch_user, directory, {"command": "request", "what": "x", "why": "y", "for": "2m"})["id"] == "r2"
    assert ctl("decline", "r2").returncode == 0 and "declined" in ctl("requests").stdout


def test_without_requesters_a_user_cannot_file_a_request(control, scratch_user):
    start, ctl, directory = control
    start()
    assert os.stat(directory / "control").st_mode & 0o777 == 0o600
    os.chmod(directory, 0o755)
    _, uid, gid = scratch_user
    refused = subprocess.run(["/usr/bin/python3", "-c", "import socket, sys; socket.socket(socket.AF_UNIX)"
                              ".connect(sys.argv[1])", str(directory / "control")], user=uid, group=gid,
                             extra_groups=[], capture_output=True, text=True, timeout=20)
    assert refused.returncode == 1 and "PermissionError" in refused.stderr
