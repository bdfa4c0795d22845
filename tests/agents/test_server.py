"""capsudo-mcp as an agent meets it: the SDK's own client over stdio, a real server process, real daemons."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters

from tests.integration.daemon_process import BIN, kill_left_running, start_daemon, wait_for_path
from tests.integration.proxy_process import start_proxy
from tests.integration.test_config_file_daemon import FileDaemon, file_daemons  # noqa: F401 (a fixture)

CAPSUDO_MCP = str(Path(sys.executable).parent / "capsudo-mcp")


@pytest.fixture
def daemons(sock_dir):
    started = []

    def start(name: str, *args: str):
        daemon = start_daemon(os.path.join(sock_dir, name), *args)
        started.append(daemon)
        return daemon

    yield start
    kill_left_running(started)


def server(*args: str) -> Client:
    return Client(StdioServerParameters(command=CAPSUDO_MCP, args=list(args)))


async def test_lists_its_tools_and_says_what_it_is_for(sock_dir):
    async with server("--endpoint", f"x={sock_dir}/x") as client:
        tools = {tool.name for tool in (await client.list_tools()).tools}
        assert tools == {"list_capabilities", "run_capability", "request_capability"}
        assert "capabilities" in client.instructions and "never retry" in client.instructions


async def test_lists_each_socket_of_a_directory_with_what_it_describes(daemons, sock_dir):
    daemons("restart-web", "--description", "restarts the web server", "-f", "-E", "-e", "LANG=C", "-e",
            "TOKEN=s3cret", "--", "/bin/true")
    daemons("logs", "--", "/bin/echo")
    async with server("--endpoints-dir", sock_dir) as client:
        result = await client.call_tool("list_capabilities", {})
    held = {entry["name"]: entry for entry in result.structured_content["capabilities"]}
    assert sorted(held) == ["logs", "restart-web"]
    web, logs = held["restart-web"], held["logs"]
    assert web["description"] == "restarts the web server" and web["accepts_arguments"] is False
    assert web["pinned_environment"] == ["LANG", "TOKEN"] and "s3cret" not in str(result.structured_content)
    assert web["program"].endswith("/true") and web["user"] is None
    assert web["approval_needed"] is False and web["password_needed"] is False and web["not_described"] is None
    assert logs["address"] == f"{sock_dir}/logs" and logs["accepts_arguments"] is True
    assert logs["expires"] == "unknown" and logs["uses_left"] == "unknown"


async def test_a_grant_tells_its_expiry_and_uses(daemons, sock_dir):
    daemons("brief", "--expires", "1h", "--uses", "3", "--", "/bin/echo")
    async with server("--endpoints-dir", sock_dir) as client:
        result = await client.call_tool("list_capabilities", {})
    [brief] = result.structured_content["capabilities"]
    assert brief["uses_left"] == 3 and brief["expires"].startswith("20") and brief["expires"].endswith("+00:00")


@pytest.fixture
def undescribed(sock_dir, tmp_path):
    """An endpoint behind capsudo-proxy, which does not know the describe extension."""
    behind = start_daemon(str(tmp_path / "behind"), "-f", "-E", "--", "/bin/sh", "-c", f"touch {tmp_path}/ran")
    proxy = start_proxy(os.path.join(sock_dir, "proxied"), behind.socket, log_path=tmp_path / "proxy.log")
    yield tmp_path / "ran"
    proxy.stop()
    kill_left_running([behind])


async def test_an_endpoint_that_does_not_describe_itself_is_unknown_not_an_error(undescribed, sock_dir):
    async with server("--endpoints-dir", sock_dir) as client:
        listed = await client.call_tool("list_capabilities", {})
        ran = await client.call_tool("run_capability", {"capability": "proxied"})
    [entry] = listed.structured_content["capabilities"]
    assert not listed.is_error and "does not describe itself" in entry["not_described"]
    assert entry["accepts_arguments"] == entry["approval_needed"] == entry["program"] == "unknown"
    assert not ran.is_error and ran.structured_content["exit_status"] == 0 and undescribed.exists()


async def test_the_operator_pins_an_endpoint_that_does_not_describe_itself(undescribed, sock_dir):
    async with server("--endpoints-dir", sock_dir, "--pinned", "proxied", "--description",
                      "proxied=touches a file") as client:
        listed = await client.call_tool("list_capabilities", {})
        refused = await client.call_tool("run_capability", {"capability": "proxied", "arguments": ["x"]})
    [entry] = listed.structured_content["capabilities"]
    assert entry["accepts_arguments"] is False and entry["description"] == "touches a file"
    assert refused.is_error and refused.structured_content["error"]["code"] == "refused-arguments"
    assert not undescribed.exists()


async def test_runs_a_pinned_endpoint_and_a_prefix_endpoint_with_arguments(daemons, sock_dir):
    daemons("pinned", "-f", "-E", "--", "/bin/sh", "-c", "echo pinned; echo oops >&2; exit 3")
    daemons("prefix", "--", "/bin/echo", "said:")
    async with server("--endpoints-dir", sock_dir) as client:
        pinned = await client.call_tool("run_capability", {"capability": "pinned"})
        prefix = await client.call_tool("run_capability", {"capability": "prefix", "arguments": ["a", "b c"]})
        fed = await client.call_tool("run_capability", {"capability": "prefix", "arguments": []})
    assert not pinned.is_error
    assert pinned.structured_content["exit_status"] == 3
    assert pinned.structured_content["stdout"] == "pinned\n" and pinned.structured_content["stderr"] == "oops\n"
    assert "exit status 3" in pinned.content[0].text
    assert prefix.structured_content["stdout"] == "said: a b c\n"
    assert prefix.structured_content["exit_status"] == 0 and prefix.structured_content["signal"] is None
    assert fed.structured_content["duration_seconds"] > 0


async def test_stdin_reaches_the_program(daemons, sock_dir):
    daemons("count", "-f", "-E", "--", "/usr/bin/wc", "-c")
    async with server("--endpoints-dir", sock_dir) as client:
        result = await client.call_tool("run_capability", {"capability": "count", "stdin": "hello"})
    assert result.structured_content["stdout"].strip() == "5"


async def test_output_over_the_cap_comes_back_truncated_and_flagged(daemons, sock_dir):
    daemons("loud", "-f", "-E", "--", "/bin/sh", "-c", "head -c 100000 /dev/zero | tr '\\0' x")
    async with server("--endpoints-dir", sock_dir, "--max-output", "1K") as client:
        result = await client.call_tool("run_capability", {"capability": "loud"})
    content = result.structured_content
    assert content["stdout"] == "x" * 1024 and content["stdout_truncated"] is True
    assert "truncated" in result.content[0].text
    assert content["stderr_truncated"] is False and content["exit_status"] == 0


async def test_arguments_to_a_pinned_endpoint_are_refused_not_ignored(daemons, sock_dir):
    daemons("restart", "-f", "-E", "--", "/bin/sh", "-c", f"touch {sock_dir}/ran")
    async with server("--endpoints-dir", sock_dir) as client:
        result = await client.call_tool("run_capability", {"capability": "restart", "arguments": ["apache"]})
    assert result.is_error and result.structured_content["error"]["code"] == "refused-arguments"
    assert not os.path.exists(f"{sock_dir}/ran")


async def test_daemon_not_running(sock_dir):
    async with server("--endpoint", f"gone={sock_dir}/gone") as client:
        result = await client.call_tool("run_capability", {"capability": "gone"})
        unknown = await client.call_tool("run_capability", {"capability": "nope"})
    assert result.is_error and result.structured_content["error"]["code"] == "daemon-not-running"
    assert "next" in result.structured_content["error"] and "error daemon-not-running" in result.content[0].text
    assert unknown.structured_content["error"]["code"] == "unknown-capability"


async def test_a_grant_that_expires_during_the_session(daemons, sock_dir):
    daemons("brief", "--expires", "1s", "-f", "-E", "--", "/bin/sleep", "10")
    async with server("--endpoints-dir", sock_dir) as client:
        result = await client.call_tool("run_capability", {"capability": "brief"})
    error = result.structured_content["error"]
    assert result.is_error and error["code"] == "expired" and "this capability expired" in error["message"]


def _gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.02)
    return False


async def test_a_session_over_its_timeout_is_hung_up(daemons, sock_dir):
    pid_file = Path(sock_dir) / "pid"
    daemons("slow", "-f", "-E", "--", "/bin/sh", "-c", f"echo $$ > {pid_file}; exec sleep 30")
    async with server("--endpoints-dir", sock_dir) as client:
        started = time.monotonic()
        result = await client.call_tool("run_capability", {"capability": "slow", "timeout": 1})
        assert time.monotonic() - started < 4
    assert result.is_error and result.structured_content["error"]["code"] == "timeout"
    assert "hung up" in result.structured_content["error"]["next"]
    assert _gone(int(pid_file.read_text()), within=5)


@pytest.mark.root
async def test_a_request_for_a_capability_reaches_the_operator(sock_dir, file_daemons):  # noqa: F811
    directory = Path(sock_dir)
    (directory / "state").mkdir(mode=0o700)
    (directory / "capsudo.toml").write_text(
        f'[control]\nlisten = "{directory}/control"\nstate = "{directory}/state"\nrequesters = "*"\n\n'
        f'[endpoint.hello]\nlisten = "{directory}/hello"\ncommand = ["echo", "hello"]\npin = "command"\n')
    file_daemons.append(FileDaemon(directory / "capsudo.toml", directory / "daemon.log"))
    wait_for_path(str(directory / "control"))
    async with server("--endpoints-dir", sock_dir, "--control", f"{directory}/control") as client:
        filed = await client.call_tool("request_capability", {"what": "restart nginx", "why": "502s", "duration": "5m"})
        unreachable = Client(StdioServerParameters(command=CAPSUDO_MCP, args=[
            "--endpoints-dir", sock_dir, "--control", f"{directory}/nothing"]))
    async with unreachable as other:
        failed = await other.call_tool("request_capability", {"what": "x", "why": "y"})
    assert filed.structured_content["request_id"] == "r1" and filed.structured_content["state"] == "pending"
    listed = subprocess.run([str(BIN / "capsudoctl"), "-S", f"{directory}/control", "requests"], capture_output=True,
                            text=True, timeout=20)
    assert "r1" in listed.stdout and "restart nginx" in listed.stdout and "pending" in listed.stdout
    assert failed.is_error and failed.structured_content["error"]["code"] == "request-failed"


@pytest.mark.root
async def test_an_endpoint_that_asks_for_a_password(sock_dir):
    # capsudod-pwauth challenges the first connection before PAM is asked anything.
    if not os.path.exists("/etc/pam.d/other"):
        pytest.skip("no PAM service 'other' in /etc/pam.d")
    front = subprocess.Popen([str(BIN / "capsudod-pwauth"), "-S", f"{sock_dir}/pw", "--service", "other", "--",
                              str(BIN / "capsudod"), "-f", "-E", "--", "/bin/true"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_path(f"{sock_dir}/pw")
        async with server("--endpoint", f"pw={sock_dir}/pw") as client:
            result = await client.call_tool("run_capability", {"capability": "pw"})
    finally:
        front.terminate()
        front.wait(10)
    assert result.is_error and result.structured_content["error"]["code"] == "password-needed"


def test_the_command_line_client_never_loads_the_sdk():
    code = "import capsudo.client, capsudo.core, sys; print('mcp' in sys.modules, 'capsudo.mcp' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]


class Approver:
    """A person at capsudoctl: waits for the one pending request, then approves or denies it."""

    def __init__(self, control: Path) -> None:
        self.control = control

    def ctl(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "capsudoctl"), "-S", str(self.control), *args], capture_output=True,
                              text=True, timeout=20)

    def pending(self) -> list[dict]:
        listed = self.ctl("--json", "pending")
        assert listed.returncode == 0, listed.stderr
        return json.loads(listed.stdout)["pending"]

    def pending_within(self, seconds: float) -> list[dict]:
        """The pending requests, once there are none or `seconds` have passed."""
        deadline = time.monotonic() + seconds
        while (requests := self.pending()) and time.monotonic() < deadline:
            time.sleep(0.05)
        return requests

    def decide_when_asked(self, *decision: str) -> threading.Thread:
        def decide() -> None:
            deadline = time.monotonic() + 10
            while not (requests := self.pending()):
                if time.monotonic() > deadline:
                    return  # the call then times out pending, and the test says so
                time.sleep(0.05)
            self.ctl(decision[0], requests[0]["id"], *decision[1:])

        thread = threading.Thread(target=decide, daemon=True)
        thread.start()
        return thread


@pytest.fixture
def approval_endpoint(sock_dir, file_daemons):  # noqa: F811
    directory = Path(sock_dir)
    (directory / "state").mkdir(mode=0o700)
    (directory / "capsudo.toml").write_text(
        f'[control]\nlisten = "{directory}/control"\nstate = "{directory}/state"\n\n'
        f'[endpoint.deploy]\nlisten = "{directory}/cap/deploy"\ndescription = "deploys the site"\n'
        f'command = ["sh", "-c", "touch {directory}/ran; echo deployed"]\npin = "command"\napprove = true\n'
        f'approval-timeout = "30s"\n')
    (directory / "cap").mkdir()
    file_daemons.append(FileDaemon(directory / "capsudo.toml", directory / "daemon.log"))
    wait_for_path(str(directory / "cap" / "deploy"))
    return directory


@pytest.mark.root
async def test_an_approval_endpoint_waits_for_a_person(approval_endpoint):
    directory = approval_endpoint
    person = Approver(directory / "control")
    async with server("--endpoints-dir", str(directory / "cap")) as client:
        listed = await client.call_tool("list_capabilities", {})
        started = time.monotonic()
        unanswered = await client.call_tool("run_capability", {"capability": "deploy", "timeout": 1})
        waited = time.monotonic() - started
        withdrawn = person.pending_within(5)
        approving = person.decide_when_asked("approve")
        approved = await client.call_tool("run_capability", {"capability": "deploy", "timeout": 20})
        approving.join(10)
        ran_once = (directory / "ran").exists()
        (directory / "ran").unlink(missing_ok=True)
        denying = person.decide_when_asked("deny", "--reason", "not during the sale")
        denied = await client.call_tool("run_capability", {"capability": "deploy", "timeout": 20})
        denying.join(10)
    [entry] = listed.structured_content["capabilities"]
    assert entry["approval_needed"] is True and entry["accepts_arguments"] is False
    assert unanswered.is_error and unanswered.structured_content["error"]["code"] == "approval-pending"
    assert unanswered.structured_content["state"] == "approval-pending" and 1 <= waited < 4
    assert "call again" in unanswered.structured_content["error"]["next"]
    assert withdrawn == [], "the request outlived the call that gave up on it"
    assert not approved.is_error and approved.structured_content["stdout"] == "deployed\n" and ran_once
    assert denied.is_error and denied.structured_content["error"]["code"] == "denied"
    assert "not during the sale" in denied.structured_content["error"]["message"]
    assert not (directory / "ran").exists()
