"""Approval with the real daemon, the real `capsudo` and the real `capsudoctl`: each outcome, as caller and audit see it.

The daemon serves `approve` endpoints from a file with a `[control]` table;
a client waits, an operator decides through capsudoctl (or nobody does, or
the client leaves), and each test reads the client's status and line, the
program's trace (a file it touches) and the audit trail.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from capsudo.proto import lean

from .daemon_process import BIN, CAPSUDO, wait_for_path
from .test_config_file_daemon import FileDaemon, file_daemons  # noqa: F401 (a fixture)
from .test_lean_terminal import Tmux

CAPSUDOCTL = str(BIN / "capsudoctl")
pytestmark = pytest.mark.root


class Approving:
    def __init__(self, directory: Path, daemon: FileDaemon) -> None:
        self.directory = directory
        self.daemon = daemon

    def ctl(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([CAPSUDOCTL, "-S", str(self.directory / "control"), *args], capture_output=True,
                              text=True, timeout=20)

    def client(self, endpoint: str, *args: str) -> subprocess.Popen:
        return subprocess.Popen([CAPSUDO, "-S", str(self.directory / endpoint), *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def pending(self, count: int = 1, timeout: float = 10.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            listed = self.ctl("--json", "pending")
            assert listed.returncode == 0, listed.stderr
            requests = json.loads(listed.stdout)["pending"]
            if len(requests) >= count:
                return requests
            assert time.monotonic() < deadline, f"never {count} pending request(s): {requests}"
            time.sleep(0.05)

    def audit(self, session: str | None = None) -> list[dict]:
        records = [json.loads(line) for line in (self.directory / "audit.jsonl").read_text().splitlines()]
        return [record for record in records if session is None or record["session"] == session]

    def events(self, session: str) -> list[str]:
        """The session's audit events, once the last (ended, written as the connection closes) is there."""
        deadline = time.monotonic() + 5
        while (events := [record["event"] for record in self.audit(session)])[-1:] != ["ended"]:
            assert time.monotonic() < deadline, f"session {session} never ended in the audit: {events}"
            time.sleep(0.02)
        return events

    def decided(self, session: str) -> dict:
        return next(record for record in self.audit(session) if record["event"] == "decided")

    def ran(self) -> bool:
        return (self.directory / "ran").exists()


@pytest.fixture
def approving(sock_dir, file_daemons):  # noqa: F811
    directory = Path(sock_dir)
    (directory / "state").mkdir(mode=0o700)
    program = ["sh", "-c", f'touch {directory}/ran; sleep "${{PAUSE:-0}}"; echo ran "$@"', "sh"]
    config = directory / "capsudo.toml"
    common = f'command = {json.dumps(program)}\napprove = true\naudit = ["{directory}/audit.jsonl"]\n'
    config.write_text(
        f'[control]\nlisten = "{directory}/control"\nstate = "{directory}/state"\n\n'
        f'[endpoint.ask]\nlisten = "{directory}/ask"\ndescription = "asks first"\nhandshake-timeout = "1s"\n'
        f'{common}\n'
        f'[endpoint.quick]\nlisten = "{directory}/quick"\napproval-timeout = "1.5s"\n{common}')
    daemon = FileDaemon(config, directory / "daemon.log")
    file_daemons.append(daemon)
    wait_for_path(str(directory / "control"))
    return Approving(directory, daemon)


def test_approved_with_capsudoctl_the_program_runs(approving):
    client = approving.client("ask", "one", "two")
    [request] = approving.pending()
    assert request["endpoint"] == "ask" and request["description"] == "asks first"
    assert request["argv"][-2:] == ["one", "two"] and request["program"] == "/usr/bin/sh"
    assert request["pid"] == client.pid and CAPSUDO in " ".join(request["cmdline"])
    assert not approving.ran()
    time.sleep(1.3)  # past the endpoint's 1 s handshake limit: the wait does not count against it
    decided = approving.ctl("approve", request["id"])
    assert decided.returncode == 0 and decided.stdout == f"approved request {request['id']}\n", decided.stderr
    out, err = client.communicate(timeout=10)
    assert (client.returncode, out, err) == (0, "ran one two\n", "")
    session = request["session"]
    assert approving.events(session) == ["accepted", "requested", "pending", "decided", "started", "ended"]
    assert approving.decided(session)["decision"] == "approved" and approving.decided(session)["approver"] == "root"
    again = approving.ctl("approve", request["id"])
    assert again.returncode == 1 and "was approved already: nothing done" in again.stderr


def test_denied_with_a_reason_nothing_runs(approving):
    client = approving.client("ask", "x")
    [request] = approving.pending()
    assert approving.ctl("deny", request["id"], "--reason", "not today").returncode == 0
    out, err = client.communicate(timeout=10)
    assert client.returncode == 1 and out == ""
    assert err == f"capsudo: error: request {request['id'][:8]} was denied by root: not today\n"
    assert not approving.ran()
    assert "started" not in approving.events(request["session"])
    assert approving.decided(request["session"])["decision"] == "denied"


def test_no_answer_in_time_is_a_denial_and_a_late_approval_does_nothing(approving):
    client = approving.client("quick")
    [request] = approving.pending()
    out, err = client.communicate(timeout=10)
    assert client.returncode == 1 and err == (f"capsudo: error: request {request['id'][:8]} was not approved "
                                              "within 1.5s: denied\n")
    assert not approving.ran()
    assert approving.decided(request["session"])["decision"] == "timed out"
    late = approving.ctl("approve", request["id"])
    assert late.returncode == 1 and "timed out already: nothing done" in late.stderr


def test_the_programs_own_runtime_does_not_count_against_the_approval_timeout(approving):
    client = subprocess.Popen([CAPSUDO, "-S", str(approving.directory / "quick"), "slow"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env={**os.environ, "PAUSE": "2"})
    [request] = approving.pending()
    assert approving.ctl("approve", request["id"]).returncode == 0
    out, err = client.communicate(timeout=10)
    assert (client.returncode, out, err) == (0, "ran slow\n", "")


def test_the_caller_leaving_withdraws_its_request(approving):
    client = approving.client("ask")
    [request] = approving.pending()
    client.send_signal(signal.SIGKILL)
    client.wait(5)
    deadline = time.monotonic() + 5
    while approving.pending(count=0):
        assert time.monotonic() < deadline, "the request outlived its caller"
        time.sleep(0.05)
    late = approving.ctl("approve", request["id"])
    assert late.returncode == 1 and "was withdrawn already: nothing done" in late.stderr
    assert not approving.ran()
    assert approving.decided(request["session"])["decision"] == "withdrawn"
    assert approving.events(request["session"])[-1] == "ended"


def test_two_approvers_race_and_one_wins(approving):
    client = approving.client("ask")
    [request] = approving.pending()
    command = [CAPSUDOCTL, "-S", str(approving.directory / "control")]
    racers = [subprocess.Popen([*command, verb, request["id"]], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True) for verb in ("approve", "deny")]
    results = [(racer.wait(10), *racer.communicate()) for racer in racers]
    winners = [index for index, (status, _, _) in enumerate(results) if status == 0]
    assert len(winners) == 1, results
    loser = results[1 - winners[0]]
    assert loser[0] == 1 and "already: nothing done" in loser[2]
    client.wait(10)
    outcome = approving.decided(request["session"])["decision"]
    assert (client.returncode, outcome) == ((0, "approved") if winners == [0] else (1, "denied"))
    assert approving.ran() == (winners == [0])


def test_a_standing_approval_covers_the_same_caller_until_it_expires(approving):
    first = approving.client("ask", "first")
    [request] = approving.pending()
    decided = approving.ctl("approve", request["id"], "--for", "2s")
    assert decided.returncode == 0 and "endpoint ask approved for this caller until" in decided.stdout
    assert first.communicate(timeout=10)[0] == "ran first\n"
    covered = approving.client("ask", "second")
    assert covered.communicate(timeout=10) == ("ran second\n", "") and covered.returncode == 0
    second = [record for record in approving.audit() if record.get("argv") == ["second"]][0]["session"]
    assert "pending" not in approving.events(second)
    assert approving.decided(second)["approver"].startswith("root (standing approval until ")
    # Another endpoint is not covered.
    other = approving.client("quick", "elsewhere")
    [elsewhere] = approving.pending()
    assert elsewhere["endpoint"] == "quick"
    other.communicate(timeout=10)
    time.sleep(2.1)
    third = approving.client("ask", "third")
    [request] = approving.pending()
    assert approving.ctl("deny", request["id"]).returncode == 0
    assert third.communicate(timeout=10)[0] == "" and third.returncode == 1


def _stdio_pipe() -> tuple[list[int], int, int]:
    r, w = os.pipe()
    return [r, w, w], r, w


def test_a_client_that_knows_only_the_documented_messages_waits_for_exit(approving):
    """As capsudo-rs does: Arg, Fd, End; then nothing but Exit comes, after the approval."""
    fds, read_end, write_end = _stdio_pipe()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(approving.directory / "ask"))
        sock.sendall(lean.arg("wire"))
        sock.sendmsg([lean.fd(3)], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, bytes(memoryview(
            __import__("array").array("i", fds))))])
        sock.sendall(lean.end())
        os.close(write_end)
        [request] = approving.pending()
        sock.settimeout(0.5)
        with pytest.raises(socket.timeout):
            sock.recv(1)  # nothing at all while it waits
        assert approving.ctl("approve", request["id"]).returncode == 0
        sock.settimeout(10)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    replies = []
    while data:
        kind, length = lean.HEADER.unpack(data[:8])
        replies.append((kind, data[8:8 + length]))
        data = data[8 + length:]
    assert [kind for kind, _ in replies] == [lean.EXIT]
    assert lean.exit_status(replies[0][1]) == 0
    assert os.read(read_end, 100) == b"ran wire\n"
    os.close(read_end)


def test_watch_shows_escaped_arguments_and_y_runs_the_program(approving, sock_dir):
    terminal = Tmux(f"capsudo-approval-{os.getpid()}")
    try:
        terminal.resize(200, 50)  # the whole request on one row, to find it on the screen
        terminal.type("echo before-watch")
        settings = terminal.settings()
        terminal.type(f"{CAPSUDOCTL} -S {approving.directory}/control watch")
        terminal.wait_for("capsudo approval: 0 pending")
        client = approving.client("ask", "\x1b[2Jcleared", "abc\u202etxt.exe")
        screen = terminal.wait_for("1 pending")
        assert "'\\e[2Jcleared'" in screen and "'abc\\u202etxt.exe'" in screen
        terminal_keys(terminal, "?")
        terminal.wait_for("cmdline")
        terminal_keys(terminal, "y")
        out, _ = client.communicate(timeout=10)
        assert client.returncode == 0 and out == "ran \x1b[2Jcleared abc\u202etxt.exe\n"
        terminal.wait_for("approved by root")
        terminal_keys(terminal, "q")
        deadline = time.monotonic() + 5
        while "capsudo approval" in (screen := terminal.screen()):
            assert time.monotonic() < deadline, f"the view stayed on the screen:\n{screen}"
            time.sleep(0.05)
        assert "before-watch" in screen  # the screen as it was before the view
        assert terminal.settings() == settings
    finally:
        terminal.close()


def terminal_keys(terminal: Tmux, keys: str) -> None:
    subprocess.run([*terminal.command, "send-keys", "-t", "t", "-l", keys], check=True)
