"""ssh:// against a real sshd that the test starts on a loopback port, with its own host and user keys.

The far side's capsudo-proxy is this checkout's, named through
CAPSUDO_REMOTE_PROXY; ssh is the system's, configured through CAPSUDO_SSH to
trust only the test's host key and to offer only the test's user key.
"""

from __future__ import annotations

import os
import shlex
import tempfile
from pathlib import Path

import pytest

from capsudo.transport import EndpointError, connect_endpoint, parse_endpoint, ssh_command_line

from .channel_session import run_over
from .daemon_process import CAPSUDO, capsudo
from .proxy_process import CAPSUDO_PROXY, start_proxy
from .sshd_server import find_sshd, start_sshd


PINNED = ["-f", "--", "sh", "-c", "echo pinned-out; echo pinned-err >&2; cat; exit 7"]
# What the daemon tells a client whose argument the pin ignored, before the status.
IGNORED_NOTE = "note: this endpoint ignores arguments ('ignored'): ran " + shlex.join(PINNED[2:])


@pytest.fixture(scope="module")
def sshd():
    if os.geteuid() != 0:
        pytest.skip("sshd needs root to log users in")
    if find_sshd() is None:
        pytest.skip("sshd is not installed (apt-get install openssh-server)")
    directory = Path(tempfile.mkdtemp(prefix="cs-ssh-", dir="/tmp"))
    server = start_sshd(directory)
    try:
        yield server
    finally:
        server.stop()
        for child in directory.iterdir():
            child.unlink()
        directory.rmdir()


@pytest.fixture
def ssh_env(sshd, monkeypatch):
    """The environment a caller of ssh:// needs for the test's sshd, in this process and for children."""
    monkeypatch.setenv("CAPSUDO_SSH", sshd.ssh_command())
    monkeypatch.setenv("CAPSUDO_REMOTE_PROXY", CAPSUDO_PROXY)
    return dict(os.environ)


def _address(sshd, path: str, user: str = "root") -> str:
    return f"ssh://{user}@127.0.0.1:{sshd.port}{path}"


def test_command_line_names_port_user_and_quoted_path(monkeypatch):
    monkeypatch.setenv("CAPSUDO_SSH", "ssh -F '/etc/my config'")
    monkeypatch.setenv("CAPSUDO_REMOTE_PROXY", "/opt/capsudo/bin/capsudo-proxy")
    argv = ssh_command_line(parse_endpoint("ssh://alice@host.example:2222/run/cap/it's"))
    assert argv == ["ssh", "-F", "/etc/my config", "-T", "-o", "BatchMode=yes", "-p", "2222", "-l", "alice", "--",
                    "host.example", "/opt/capsudo/bin/capsudo-proxy --stdio 'unix:///run/cap/it'\"'\"'s'"]


@pytest.mark.root
@pytest.mark.slow
async def test_library_session_over_ssh(daemon_factory, sshd, ssh_env):
    daemon = daemon_factory(*PINNED)
    channel = await connect_endpoint(_address(sshd, daemon.socket))
    status, stdout, stderr, errors = await run_over(channel, b"over ssh\n")
    assert (status, stdout, stderr, errors) == (7, b"pinned-out\nover ssh\n", b"pinned-err\n", [IGNORED_NOTE])
    # The daemon's peer is the far side's proxy, a child of sshd, not this process.
    assert f"pid={os.getpid()} " not in daemon.log()
    assert "status=7" in daemon.log()


@pytest.mark.root
@pytest.mark.slow
def test_the_capsudo_command_runs_a_session_over_ssh(daemon_factory, sshd, ssh_env):
    daemon = daemon_factory(*PINNED)
    payload = b"typed into capsudo\n" * 1000
    result = capsudo(_address(sshd, daemon.socket), "--", "ignored", input=payload, timeout=60, env=ssh_env)
    assert result.returncode == 7, result.stderr
    assert result.stdout == b"pinned-out\n" + payload
    # The pinned endpoint ignored the arguments, and says so after the output.
    assert result.stderr.startswith(b"pinned-err\ncapsudo: note: this endpoint ignores arguments (")
    missing = capsudo(_address(sshd, daemon.socket + ".absent"), "true", timeout=60, env=ssh_env)
    assert missing.returncode == 1
    assert missing.stderr.decode().startswith("capsudo: error: capsudo-proxy: no endpoint at "), missing.stderr
    assert missing.stderr.count(b"\n") == 1


@pytest.mark.root
@pytest.mark.slow
def test_proxy_exposes_an_ssh_endpoint_as_a_local_socket(daemon_factory, sshd, ssh_env, sock_dir):
    daemon = daemon_factory(*PINNED)
    proxy = start_proxy(f"unix://{sock_dir}/local.sock", _address(sshd, daemon.socket),
                        log_path=Path(sock_dir) / "proxy.log", env=ssh_env)
    try:
        payload = b"line through ssh\n" * 2000
        result = capsudo(proxy.listen, "--", "ignored", input=payload, timeout=60)
        assert result.returncode == 7, result.stderr
        assert result.stdout == b"pinned-out\n" + payload
        # The pinned endpoint ignored the arguments, and says so after the output.
        assert result.stderr.startswith(b"pinned-err\ncapsudo: note: this endpoint ignores arguments (")
    finally:
        proxy.stop()


@pytest.mark.root
@pytest.mark.slow
async def test_missing_remote_socket_is_reported_by_the_far_side(sshd, ssh_env, sock_dir):
    channel = await connect_endpoint(_address(sshd, f"{sock_dir}/absent.sock"))
    status, stdout, _, errors = await run_over(channel, b"")
    assert (status, stdout) == (1, b"")
    assert errors == [f"capsudo-proxy: no endpoint at {sock_dir}/absent.sock: is its daemon running?"]


@pytest.mark.root
@pytest.mark.slow
async def test_refused_login_is_one_clear_line(daemon_factory, sshd, ssh_env, sock_dir):
    daemon = daemon_factory(*PINNED)
    channel = await connect_endpoint(_address(sshd, daemon.socket, user="nobody"))
    with pytest.raises(Exception) as failure:
        await run_over(channel, b"")
    message = str(failure.value)
    assert message.startswith(f"cannot connect to {_address(sshd, daemon.socket, user='nobody')}: ssh exited with status 255: ")
    assert "Permission denied" in message and "\n" not in message
    assert "session" not in daemon.log()


@pytest.mark.root
@pytest.mark.slow
async def test_missing_remote_proxy_is_one_clear_line(daemon_factory, sshd, ssh_env, monkeypatch):
    daemon = daemon_factory(*PINNED)
    monkeypatch.setenv("CAPSUDO_REMOTE_PROXY", "/nonexistent/capsudo-proxy")
    channel = await connect_endpoint(_address(sshd, daemon.socket))
    with pytest.raises(Exception) as failure:
        await run_over(channel, b"")
    message = str(failure.value)
    assert "ssh exited with status 127" in message and "CAPSUDO_REMOTE_PROXY" in message
    assert "\n" not in message


async def test_ssh_that_cannot_be_run_is_an_endpoint_error(monkeypatch):
    monkeypatch.setenv("CAPSUDO_SSH", "/nonexistent/ssh")
    with pytest.raises(EndpointError, match=r"^cannot connect to ssh://h/p: cannot run /nonexistent/ssh: No such file"):
        await connect_endpoint("ssh://h/p")


@pytest.mark.root
@pytest.mark.slow
@pytest.mark.terminal
def test_interactive_session_over_ssh(daemon_factory, sshd, ssh_env, sock_dir):
    import pexpect

    daemon = daemon_factory("-f", "--", "sh", "-c", "tty >/dev/null && echo on-a-tty; stty size; read l; echo got:$l")
    proxy = start_proxy(f"unix://{sock_dir}/local.sock", _address(sshd, daemon.socket),
                        log_path=Path(sock_dir) / "proxy.log", env=ssh_env)
    try:
        child = pexpect.spawn(CAPSUDO, ["-S", proxy.listen], timeout=60, dimensions=(33, 111),
                              env={"PATH": os.environ["PATH"], "TERM": "xterm"})
        try:
            child.expect_exact("on-a-tty")
            child.expect_exact("33 111")
            child.sendline("over ssh")
            child.expect_exact("got:over ssh")
            child.expect(pexpect.EOF)
        finally:
            child.close()
        assert child.exitstatus == 0
    finally:
        proxy.stop()
