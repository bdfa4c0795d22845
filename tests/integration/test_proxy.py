"""capsudo-proxy with the real commands: chains of proxies, the stdio bridge, bad input, a target that is down."""

from __future__ import annotations

import os
import shlex
import socket
import stat
import struct
import subprocess
import time
from pathlib import Path

import pytest
import trio

from capsudo.proto import Arg, End, Error, Exit, Fd
from capsudo.transport import MuxChannel, connect_unix

from .channel_session import run_over
from .daemon_process import CAPSUDO, capsudo, kill_left_running
from .proxy_process import CAPSUDO_PROXY, start_proxy

# Says something on both outputs, echoes its input, and exits with a status of its own.
PINNED = ["-f", "--", "sh", "-c", "echo pinned-out; echo pinned-err >&2; cat; exit 7"]
# What the daemon tells a client whose argument the pin ignored, before the status.
IGNORED_NOTE = "note: this endpoint ignores arguments ('ignored'): ran " + shlex.join(PINNED[2:])


@pytest.fixture
def proxies(sock_dir):
    started = []

    def start(listen: str, target: str, *options: str, name: str):
        proxy = start_proxy(listen, target, *options, log_path=Path(sock_dir) / f"{name}.log")
        started.append(proxy)
        return proxy

    yield start
    kill_left_running(started)


def _session_lines(daemon) -> list[str]:
    return [line for line in daemon.log().splitlines() if line.startswith("capsudod: session ")]


def _wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


@pytest.fixture
def chain(daemon_factory, proxies, sock_dir):
    """capsudod on a Unix socket <- proxy tcp:// on loopback <- proxy on a local Unix socket."""
    daemon = daemon_factory(*PINNED)
    far = proxies("tcp://127.0.0.1:0", f"unix://{daemon.socket}", name="far")
    near = proxies(f"{sock_dir}/near.sock", far.listen, name="near")
    return daemon, far, near


def test_unix_tcp_unix_chain_runs_the_pinned_command(chain):
    daemon, far, near = chain
    payload = b"through two proxies\n" * 5000
    result = capsudo(near.listen, "--", "rm", "-rf", "/", input=payload)
    assert result.returncode == 7, result.stderr
    assert result.stdout == b"pinned-out\n" + payload
    # The pinned endpoint ignored the arguments, and says so after the output.
    assert result.stderr.startswith(b"pinned-err\ncapsudo: note: this endpoint ignores arguments (")


def test_each_hop_logs_its_own_peer_and_the_daemon_sees_the_proxy(chain):
    daemon, far, near = chain
    client = subprocess.Popen(
        [CAPSUDO, "-S", near.listen],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    client.communicate(timeout=30)
    assert client.returncode == 7
    _wait_for(lambda: near.session_lines() and far.session_lines() and _session_lines(daemon))
    # The original peer is logged at the proxy it reached...
    assert f"session from pid={client.pid} uid={os.getuid()}" in near.session_lines()[0]
    assert "status=7" in near.session_lines()[0]
    # ...the next hop sees the first proxy's TCP connection...
    assert "session from tcp 127.0.0.1:" in far.session_lines()[0]
    # ...and the daemon sees the last proxy as its peer, never the client.
    assert f"pid={far.process.pid} " in _session_lines(daemon)[0]


def test_client_that_goes_away_hangs_the_program_up_across_the_chain(daemon_factory, proxies, sock_dir):
    daemon = daemon_factory("-f", "--", "sleep", "120")
    far = proxies("tcp://127.0.0.1:0", daemon.socket, name="far")
    near = proxies(f"{sock_dir}/near.sock", far.listen, name="near")
    client = subprocess.Popen([CAPSUDO, "-S", near.listen], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: b"sleep\x00120" in _children_cmdlines(daemon.process.pid), timeout=20)
    finally:
        client.kill()
        client.wait()
    # Every hop notices, and the daemon hangs the program up (SIGHUP: 129).
    _wait_for(lambda: _session_lines(daemon), timeout=20)
    assert "status=129 outcome=client hung up" in _session_lines(daemon)[0]
    _wait_for(lambda: near.session_lines() and far.session_lines(), timeout=20)
    assert "outcome=client hung up" in near.session_lines()[0]
    assert "outcome=client hung up" in far.session_lines()[0]


def _children_cmdlines(pid: int) -> bytes:
    found = b""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat_file:
                parent = int(stat_file.read().rsplit(b")", 1)[1].split()[1])
            if parent == pid:
                with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                    found += cmdline.read() + b"\n"
        except (OSError, ValueError, IndexError):
            continue
    return found


@pytest.mark.terminal
def test_interactive_session_and_window_sizes_cross_the_chain(daemon_factory, proxies, sock_dir):
    import pexpect

    daemon = daemon_factory("-f", "--", "sh", "-c",
                            "stty size; read line; echo got:$line; "
                            # The resize and the typed line travel apart: wait for the resize, boundedly.
                            "for i in $(seq 100); do [ \"$(stty size)\" = '30 100' ] || break; sleep 0.1; done; "
                            "stty size; exit 3")
    far = proxies("tcp://127.0.0.1:0", daemon.socket, name="far")
    near = proxies(f"{sock_dir}/near.sock", far.listen, name="near")
    child = pexpect.spawn(CAPSUDO, ["-S", near.listen], timeout=30, dimensions=(30, 100),
                          env={"PATH": os.environ["PATH"], "TERM": "xterm"})
    try:
        # The handshake's Winsize, replayed by both proxies.
        child.expect_exact("30 100")
        # A later resize: SIGWINCH at the client, a Winsize relayed hop by hop to the daemon's pty.
        child.setwinsize(40, 120)
        child.sendline("typed")
        child.expect_exact("got:typed")
        child.expect_exact("40 120")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 3


def test_unix_to_unix_with_owner_and_mode(daemon_factory, proxies, sock_dir):
    daemon = daemon_factory(*PINNED)
    proxy = proxies(f"{sock_dir}/exposed.sock", daemon.socket, "-m", "0700", name="exposed")
    info = os.stat(proxy.listen)
    assert stat.S_ISSOCK(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o700
    result = capsudo(proxy.listen, input=b"unix to unix\n")
    assert (result.returncode, result.stdout, result.stderr) == (7, b"pinned-out\nunix to unix\n", b"pinned-err\n")


@pytest.mark.root
def test_owner_of_the_listener(daemon_factory, proxies, sock_dir, scratch_user):
    name, uid, gid = scratch_user
    daemon = daemon_factory(*PINNED)
    proxy = proxies(f"{sock_dir}/owned.sock", daemon.socket, "-o", f"{name}:{name}", "-m", "0660", name="owned")
    info = os.stat(proxy.listen)
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (uid, gid, 0o660)


def test_channel_to_channel(daemon_factory, proxies, sock_dir):
    daemon = daemon_factory(*PINNED)
    far = proxies("tcp://127.0.0.1:0", daemon.socket, name="far")
    middle = proxies("tcp://127.0.0.1:0", far.listen, name="middle")
    near = proxies(f"{sock_dir}/near.sock", middle.listen, name="near")
    result = capsudo(near.listen, input=b"three hops\n")
    assert (result.returncode, result.stdout, result.stderr) == (7, b"pinned-out\nthree hops\n", b"pinned-err\n")


# ---- the stdio bridge --------------------------------------------------------------------


async def _session_over_stdio_bridge(target: str, stdin_data: bytes) -> tuple[int, bytes, bytes, list[str]]:
    """Run `capsudo-proxy --stdio target` and one session through it as the dialing side."""
    process = await trio.lowlevel.open_process([CAPSUDO_PROXY, "--stdio", target], stdin=subprocess.PIPE,
                                               stdout=subprocess.PIPE)
    channel = MuxChannel(trio.StapledStream(process.stdin, process.stdout), "dialing")
    outcome = await run_over(channel, stdin_data)
    # One session, then it is gone.
    with trio.fail_after(20):
        assert await process.wait() == 0
    return outcome


async def test_stdio_bridge_serves_one_session(daemon_factory):
    daemon = daemon_factory(*PINNED)
    status, stdout, stderr, errors = await _session_over_stdio_bridge(f"unix://{daemon.socket}", b"over stdio\n")
    assert (status, stdout, stderr, errors) == (7, b"pinned-out\nover stdio\n", b"pinned-err\n", [IGNORED_NOTE])


async def test_stdio_bridge_with_its_target_down_says_why(sock_dir):
    status, stdout, _, errors = await _session_over_stdio_bridge(f"unix://{sock_dir}/absent.sock", b"")
    assert status == 1 and stdout == b""
    assert errors == [f"capsudo-proxy: no endpoint at {sock_dir}/absent.sock: is its daemon running?"]


def test_garbage_is_refused_at_the_stdio_bridge(daemon_factory):
    daemon = daemon_factory(*PINNED)
    # A frame of an unknown kind (9), stream 0, empty payload.
    result = subprocess.run([CAPSUDO_PROXY, "--stdio", daemon.socket], input=struct.pack("<BII", 9, 0, 0),
                            capture_output=True, timeout=30)
    assert b"capsudo-proxy: unknown frame kind 9" in result.stdout  # inside an Error control frame
    assert b"outcome=refused: unknown frame kind 9 " in result.stderr
    assert result.stderr.count(b"\n") == 1
    assert _session_lines(daemon) == [], "bad input reached the daemon"


# ---- bad input is refused at the hop it reaches ------------------------------------------


def _refused_by(proxy, daemon, text: str) -> None:
    _wait_for(lambda: proxy.session_lines())
    assert "outcome=refused: " in proxy.session_lines()[-1], proxy.log()
    assert text in proxy.session_lines()[-1]
    assert _session_lines(daemon) == [], "bad input reached the daemon"


async def _exchange_unix(path: str, messages) -> list:
    channel = await connect_unix(path)
    replies = []
    async with channel:
        for message, fds in messages:
            await channel.send(message, fds)
        while (received := await channel.receive()) is not None:
            replies.append(received.message)
    return replies


async def test_bad_request_is_refused_at_the_unix_hop(chain):
    daemon, far, near = chain
    read_end, write_end = os.pipe()
    try:
        # No End after the refused Fd: the proxy answers at once, and unread bytes would reset the socket.
        replies = await _exchange_unix(near.listen, [(Arg("x"), []), (Fd(2), [read_end, write_end])])
    finally:
        os.close(read_end)
        os.close(write_end)
    assert replies == [Error("capsudo-proxy: expected 3 descriptors (stdin, stdout, stderr), got 2"), Exit(1)]
    _refused_by(near, daemon, "expected 3 descriptors")
    assert far.session_lines() == []


def test_garbage_is_refused_at_the_unix_hop(chain):
    daemon, far, near = chain
    with socket.socket(socket.AF_UNIX) as raw:
        raw.connect(near.listen)
        raw.sendall(b"\xff" * 64)
        raw.settimeout(20)
        reply = raw.recv(4096)
    assert b"capsudo-proxy: " in reply
    _refused_by(near, daemon, "")
    assert far.session_lines() == []


def test_garbage_is_refused_at_the_tcp_hop(chain):
    daemon, far, near = chain
    host, port = far.listen.removeprefix("tcp://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=20) as raw:
        # A frame of an unknown kind (9), stream 0, empty payload.
        raw.sendall(struct.pack("<BII", 9, 0, 0))
        raw.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := raw.recv(4096):
            received += chunk
    assert b"capsudo-proxy: " in received
    _refused_by(far, daemon, "")
    # The chain still serves everyone else.
    result = capsudo(near.listen, input=b"still here\n")
    assert (result.returncode, result.stdout) == (7, b"pinned-out\nstill here\n")


def test_oversized_request_is_refused_by_the_proxys_own_limit(chain, proxies, sock_dir):
    daemon, far, _ = chain
    strict = proxies(f"{sock_dir}/strict.sock", far.listen, "--max-items", "3", name="strict")
    result = capsudo(strict.listen, "--", "a", "b", "c", "d", env={"PATH": os.environ["PATH"]})
    assert result.returncode == 1
    assert result.stderr == b"capsudo: error: capsudo-proxy: too many arguments and environment entries (limit 3)\n"
    _refused_by(strict, daemon, "too many arguments")


# ---- a target that is down -----------------------------------------------------------------


def test_listener_it_cannot_create_is_one_line(sock_dir):
    result = subprocess.run([CAPSUDO_PROXY, "-S", f"{sock_dir}/no-such-dir/front.sock", f"{sock_dir}/cap.sock"],
                            capture_output=True, timeout=30)
    assert result.returncode == 1
    assert result.stderr.decode().startswith("capsudo-proxy: cannot ")
    assert result.stderr.count(b"\n") == 1


def test_proxy_whose_unix_target_is_down_says_so(proxies, sock_dir):
    proxy = proxies(f"{sock_dir}/front.sock", f"{sock_dir}/absent.sock", name="front")
    result = capsudo(proxy.listen, "--", "true")
    assert result.returncode == 1
    assert result.stderr == (f"capsudo: error: capsudo-proxy: no endpoint at {sock_dir}/absent.sock: "
                             "is its daemon running?\n").encode()


def test_proxy_whose_tcp_hop_went_away_says_so(chain):
    daemon, far, near = chain
    far.stop()
    result = capsudo(near.listen, "--", "true")
    assert result.returncode == 1
    line = result.stderr.decode()
    assert line.startswith(f"capsudo: error: capsudo-proxy: cannot connect to {far.listen}: ")
    assert "refused" in line and line.count("\n") == 1


# ---- the password flow crosses the proxy -----------------------------------------------------


@pytest.fixture
def pam_service():
    """A PAM service file of the test's own (pam_unix), removed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("needs root to write /etc/pam.d")
    name = f"capsudo-proxytest-{os.getpid()}"
    path = Path("/etc/pam.d") / name
    path.write_text("auth required pam_unix.so nodelay\naccount required pam_unix.so\n")
    try:
        yield name
    finally:
        path.unlink()


@pytest.mark.root
@pytest.mark.pam
@pytest.mark.terminal
def test_password_flow_crosses_the_proxy(sock_dir, scratch_user, pam_service):
    import pexpect

    from .daemon_process import BIN

    name, uid, gid = scratch_user
    password = "proxy-test-" + os.urandom(6).hex()
    subprocess.run(["chpasswd"], input=f"{name}:{password}\n".encode(), check=True, capture_output=True)
    auth_socket = f"{sock_dir}/auth.sock"
    pwauth_log = open(Path(sock_dir) / "pwauth.log", "wb")
    pwauth = subprocess.Popen(
        [str(BIN / "capsudod-pwauth"), "-S", auth_socket, "-m", "0777", "--service", pam_service,
         "--", str(BIN / "capsudod"), "-f", "--", "echo", "authenticated"],
        stdin=subprocess.DEVNULL, stdout=pwauth_log, stderr=pwauth_log)
    pwauth_log.close()
    # The proxy runs as the scratch user, so that is the peer capsudod-pwauth checks.
    os.chmod(sock_dir, 0o711)
    proxy_dir = Path(sock_dir) / "proxy"
    proxy_dir.mkdir()
    os.chown(proxy_dir, uid, gid)
    proxy = None
    try:
        _wait_for(lambda: os.path.exists(auth_socket), timeout=20)
        proxy = start_proxy(f"{proxy_dir}/front.sock", auth_socket, "-m", "0777", log_path=Path(sock_dir) / "p.log",
                            prefix=("setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups"))
        child = pexpect.spawn(CAPSUDO, ["-S", proxy.listen], timeout=30, env={"PATH": os.environ["PATH"], "TERM": "dumb"})
        try:
            # The Unauthorized came back through the proxy, naming the proxy's user.
            child.expect_exact(f"[capsudo] {name}@")
            child.expect_exact("password: ")
            child.sendline(password)
            # The Secret went through: PAM accepted it and capsudod ran the program.
            child.expect_exact("authenticated")
            child.expect(pexpect.EOF)
        finally:
            child.close()
        assert child.exitstatus == 0
        assert password not in proxy.log()
    finally:
        if proxy is not None:
            proxy.stop()
        pwauth.terminate()
        pwauth.wait(10)
