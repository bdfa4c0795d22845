"""capsudod and capsudo over the multiplexed channel: real processes on tcp:// and tls:// loopback.

The same sessions as on a Unix socket, with the descriptors' bytes carried
as streams inside one TCP (or TLS) connection. vsock:// cannot be reached on
this machine (no vsock loopback), so only what runs here is checked: the
addresses, listening, and a clear error on connect.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import termios
import time

import pytest

from capsudo.transport import VsockEndpoint, parse_endpoint

from .daemon_process import CAPSUDO, CAPSUDOD, capsudo

FOUR_MIB = 4 * 1024 * 1024


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    """PEM paths: a CA, a daemon and a client it signed, and a client signed by another CA."""
    trustme = pytest.importorskip("trustme")
    directory = tmp_path_factory.mktemp("tls")
    ca, other_ca = trustme.CA(), trustme.CA()
    paths = {name: str(directory / f"{name}.pem") for name in ("ca", "daemon", "client", "stranger", "other_ca")}
    ca.cert_pem.write_to_path(paths["ca"])
    other_ca.cert_pem.write_to_path(paths["other_ca"])
    ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(paths["daemon"])
    ca.issue_cert("client.capsudo.test").private_key_and_cert_chain_pem.write_to_path(paths["client"])
    other_ca.issue_cert("stranger.capsudo.test").private_key_and_cert_chain_pem.write_to_path(paths["stranger"])
    return paths


def _tls_daemon(network_daemon_factory, certificates, *args):
    return network_daemon_factory(
        "tls://127.0.0.1:0",
        "--tls-cert", certificates["daemon"], "--tls-key", certificates["daemon"],
        "--tls-client-ca", certificates["ca"], *args,
    )


def _client_tls(certificates, identity: str = "client", ca: str = "ca") -> list[str]:
    return ["--tls-cert", certificates[identity], "--tls-key", certificates[identity], "--tls-ca", certificates[ca]]


@pytest.fixture(params=["tcp", "tls"])
def channel(request, network_daemon_factory, certificates):
    """(endpoint, client flags, start): a daemon factory on tcp:// or tls:// and how a client reaches it."""
    if request.param == "tcp":
        def start(*args):
            return network_daemon_factory("tcp://127.0.0.1:0", *args)
        return start, []

    def start(*args):
        return _tls_daemon(network_daemon_factory, certificates, *args)

    return start, _client_tls(certificates)


def test_cat_round_trip(channel):
    start, flags = channel
    daemon = start()
    payload = bytes(range(256)) * 4096 + b"end\n"
    result = capsudo(daemon.socket, *flags, "--", "sh", "-c", "cat; echo to-stderr >&2", input=payload)
    assert result.returncode == 0, result.stderr
    assert result.stdout == payload
    assert result.stderr == b"to-stderr\n"
    assert re.search(rf"session {daemon.socket[:3]} 127\.0\.0\.1:\d+ .*argv=.*status=0 outcome=ok", daemon.log())


@pytest.mark.parametrize(
    "command, status",
    [
        (["true"], 0),
        (["sh", "-c", "exit 3"], 3),
        (["sh", "-c", "kill -9 $$"], 137),
        (["sh", "-c", "kill -TERM $$"], 143),
        (["no-such-program-here"], 127),
    ],
)
def test_status_and_signals_are_relayed(channel, command, status):
    start, flags = channel
    daemon = start()
    assert capsudo(daemon.socket, *flags, "--", *command).returncode == status


def test_stdin_end_of_file_reaches_the_program(channel):
    start, flags = channel
    daemon = start()
    result = capsudo(daemon.socket, *flags, "--", "sh", "-c", "cat; echo after-eof", input=b"abc")
    assert result.stdout == b"abcafter-eof\n"
    with open(os.devnull, "rb") as devnull:
        empty = capsudo(daemon.socket, *flags, "--", "wc", "-c", stdin=devnull)
    assert empty.stdout.strip() == b"0"


def test_4_mib_through_a_non_blocking_stdout_drained_late(channel):
    start, flags = channel
    daemon = start()
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETFL, fcntl.fcntl(write_end, fcntl.F_GETFL) | os.O_NONBLOCK)
    client = subprocess.Popen(
        [CAPSUDO, "-S", daemon.socket, *flags, "--", "head", "-c", str(FOUR_MIB), "/dev/urandom"],
        stdin=subprocess.DEVNULL, stdout=write_end, stderr=subprocess.PIPE,
    )
    os.close(write_end)
    try:
        time.sleep(2)  # the pipe (64 KiB) is full long before this
        assert client.poll() is None, "the client ended before its output was read"
        received = bytearray()
        while chunk := os.read(read_end, 1 << 20):
            received += chunk
        assert client.wait(30) == 0, client.stderr.read()
    finally:
        os.close(read_end)
        if client.poll() is None:
            client.kill()
        client.wait()
    assert len(received) == FOUR_MIB
    assert client.stderr.read() == b""


def test_input_and_output_match_byte_for_byte(channel, tmp_path):
    start, flags = channel
    daemon = start()
    payload = os.urandom(3_000_000)
    copy = tmp_path / "copy"
    result = capsudo(daemon.socket, *flags, "--", "sh", "-c", 'cat > "$0"; cat "$0"; sha256sum < "$0" >&2', str(copy),
                     input=payload)
    assert result.returncode == 0
    assert result.stdout == payload
    assert result.stderr.split()[0].decode() == hashlib.sha256(payload).hexdigest()


def test_sigterm_stops_a_network_daemon_cleanly(network_daemon_factory):
    daemon = network_daemon_factory("tcp://127.0.0.1:0")
    assert daemon.stop() == 0
    assert "SIGTERM: stopping" in daemon.log()


def test_library_run_over_tcp(network_daemon_factory, tmp_path):
    daemon = network_daemon_factory("tcp://127.0.0.1:0")
    script = (
        "import sys\n"
        "from capsudo.core import run\n"
        f"result = run(['sh', '-c', 'cat; exit 5'], endpoint={daemon.socket!r})\n"
        "sys.stderr.write(f'status={result.status}\\n')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], input=b"through the library\n", capture_output=True, timeout=30)
    assert result.stdout == b"through the library\n"
    assert result.stderr == b"status=5\n"


def test_capsudo_socket_variable_takes_a_tcp_address(network_daemon_factory):
    daemon = network_daemon_factory("tcp://127.0.0.1:0")
    result = subprocess.run([CAPSUDO, "--", "echo", "via-env"], capture_output=True, timeout=30,
                            env={**os.environ, "CAPSUDO_SOCKET": daemon.socket})
    assert result.stdout == b"via-env\n"


# ---- interactive ------------------------------------------------------------


@pytest.mark.terminal
def test_interactive_session_over_tcp_follows_a_resize(network_daemon_factory):
    pexpect = pytest.importorskip("pexpect")
    daemon = network_daemon_factory("tcp://127.0.0.1:0")
    child = pexpect.spawn(CAPSUDO, ["-S", daemon.socket, "--", "sh"], dimensions=(24, 80), timeout=20,
                          env={**os.environ, "PS1": "$ ", "TERM": "dumb"})
    try:
        # The program's terminal is the daemon's pty, not the one pexpect gave the client.
        child.sendline("stty size; tty")
        child.expect(r"24 80\r\n(/dev/pts/\d+)\r\n")
        assert child.match.group(1).decode() != os.ttyname(child.child_fd)
        child.setwinsize(40, 132)
        # The resize travels as a Winsize message; ask until the program sees it.
        deadline = time.monotonic() + 15
        while True:
            child.sendline("stty size")
            index = child.expect([r"40 132\r\n", r"24 80\r\n"])
            if index == 0:
                break
            assert time.monotonic() < deadline, "the window change never reached the program"
            time.sleep(0.2)
        child.sendline("exit 7")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 7


@pytest.mark.terminal
def test_interactive_session_over_tcp_restores_the_terminal(network_daemon_factory, tmp_path):
    pexpect = pytest.importorskip("pexpect")
    daemon = network_daemon_factory("tcp://127.0.0.1:0")
    # A shell holds the terminal; capsudo runs inside it and must give back cooked mode.
    # (Markers are split with '' so that the terminal's echo of the command line cannot match them.)
    shell = pexpect.spawn("sh", env={**os.environ, "PS1": "outer$ ", "TERM": "dumb"}, timeout=20, cwd=str(tmp_path))
    try:
        shell.expect_exact("outer$ ")
        shell.sendline("stty -g > before; " + f"{CAPSUDO} -S {daemon.socket} -- sh -c 'stty size'; stty -g > after; cmp before after && echo SA''ME")
        shell.expect(r"\d+ \d+")
        shell.expect("SAME")
        assert (tmp_path / "before").read_bytes().strip(), "stty -g printed nothing"
        shell.sendline("exit")
        shell.expect(pexpect.EOF)
    finally:
        shell.close()


@pytest.mark.terminal
@pytest.mark.parametrize("way_out", ["daemon killed", "client terminated"])
def test_interactive_session_over_tcp_gives_the_terminal_back_on_a_bad_end(network_daemon_factory, tmp_path, way_out):
    pexpect = pytest.importorskip("pexpect")
    daemon = network_daemon_factory("tcp://127.0.0.1:0")
    shell = pexpect.spawn("sh", env={**os.environ, "PS1": "outer$ ", "TERM": "dumb"}, timeout=20, cwd=str(tmp_path))
    try:
        shell.expect_exact("outer$ ")
        shell.sendline(f"stty -g > before; {CAPSUDO} -S {daemon.socket} -- sh -c 'echo sta''rted; exec sleep 60'; "
                       "echo status=$?; stty -g > after; cmp before after && echo SA''ME")
        shell.expect("started")
        client_pid = int(subprocess.run(["pgrep", "-P", str(shell.pid), "-f", "capsudo"], capture_output=True,
                                        text=True).stdout.split()[0])
        # The terminal (the shell's pty, opened by its name) is raw while the session runs.
        terminal = os.open(os.readlink(f"/proc/{shell.pid}/fd/0"), os.O_RDWR | os.O_NOCTTY)
        assert not termios.tcgetattr(terminal)[3] & (termios.ECHO | termios.ICANON)
        if way_out == "daemon killed":
            daemon.process.kill()
            shell.expect(r"capsudo: error: [^\r\n]+")
            shell.expect(r"status=1\b")
        else:
            os.kill(client_pid, signal.SIGTERM)
            shell.expect(rf"status={128 + signal.SIGTERM}\b")
        shell.expect("SAME")
        assert termios.tcgetattr(terminal)[3] & termios.ECHO
        os.close(terminal)
        shell.sendline("exit")
        shell.expect(pexpect.EOF)
    finally:
        shell.close()


def _is_raw(terminal: int) -> bool:
    return not termios.tcgetattr(terminal)[3] & (termios.ECHO | termios.ICANON)


@pytest.mark.terminal
def test_interactive_client_over_tcp_stopped_and_continued_is_raw_again(network_daemon_factory):
    """bash puts its own settings back when a job stops; after `fg` the client goes raw again
    and sends the size the window took meanwhile."""
    pexpect = pytest.importorskip("pexpect")
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash is not installed")
    daemon = network_daemon_factory("tcp://127.0.0.1:0")
    shell = pexpect.spawn(bash, ["--norc", "--noprofile", "-i"], dimensions=(24, 80), timeout=20,
                          env={**os.environ, "PS1": "bash-ready> ", "TERM": "dumb"})
    terminal = None
    try:
        shell.expect_exact("bash-ready> ")
        terminal = os.open(os.readlink(f"/proc/{shell.pid}/fd/0"), os.O_RDWR | os.O_NOCTTY)
        before = termios.tcgetattr(terminal)
        shell.sendline(f"{CAPSUDO} -S {daemon.socket} -- sh -c "
                       "'echo session-$((6 * 7)); while read line; do echo \"line=$line $(stty size)\"; done'")
        shell.expect_exact("session-42")
        assert _is_raw(terminal)
        client = int(subprocess.run(["pgrep", "-P", str(shell.pid)], capture_output=True, text=True).stdout.split()[0])
        os.kill(client, signal.SIGSTOP)
        shell.expect_exact("bash-ready> ")
        shell.setwinsize(50, 100)
        shell.sendline("fg")
        deadline = time.monotonic() + 10
        while not _is_raw(terminal):
            assert time.monotonic() < deadline, "the terminal stayed cooked after fg"
            time.sleep(0.05)
        shell.send("typed\r")
        shell.expect_exact("line=typed 50 100")
        shell.sendcontrol("d")
        shell.expect_exact("bash-ready> ")
        assert termios.tcgetattr(terminal) == before
    finally:
        if terminal is not None:
            os.close(terminal)
        shell.close(force=True)


# ---- TLS refusals -------------------------------------------------------------


@pytest.mark.parametrize(
    "identity, client_says, daemon_says",
    [
        (None, "the server requires a certificate and we presented none", "the client presented no certificate"),
        ("stranger", "the server does not trust the CA that signed our certificate",
         "the client's certificate is not signed by the accepted CA"),
    ],
)
def test_tls_client_refused_with_a_clear_error(network_daemon_factory, certificates, identity, client_says, daemon_says):
    daemon = _tls_daemon(network_daemon_factory, certificates)
    flags = ["--tls-ca", certificates["ca"]] if identity is None else _client_tls(certificates, identity)
    refused = capsudo(daemon.socket, *flags, "--", "echo", "must-not-run")
    assert refused.returncode == 1
    assert refused.stdout == b""
    lines = refused.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("capsudo: error: ") and client_says in lines[0], lines
    deadline = time.monotonic() + 10
    while daemon_says not in daemon.log():
        assert time.monotonic() < deadline, daemon.log()
        time.sleep(0.05)
    assert "must-not-run" not in daemon.log()
    # The daemon goes on serving clients with a good certificate.
    assert capsudo(daemon.socket, *_client_tls(certificates), "--", "echo", "still-here").stdout == b"still-here\n"
    assert daemon.process.poll() is None


def test_tls_client_refuses_a_daemon_it_does_not_trust(network_daemon_factory, certificates):
    daemon = _tls_daemon(network_daemon_factory, certificates)
    result = capsudo(daemon.socket, *_client_tls(certificates, ca="other_ca"), "--", "true")
    assert result.returncode == 1
    assert result.stderr.decode().startswith("capsudo: error: TLS handshake with ")
    assert "the server's certificate is not trusted" in result.stderr.decode()


def test_tls_settings_from_the_environment(network_daemon_factory, certificates):
    daemon = _tls_daemon(network_daemon_factory, certificates)
    env = {**os.environ, "CAPSUDO_TLS_CERT": certificates["client"], "CAPSUDO_TLS_KEY": certificates["client"],
           "CAPSUDO_TLS_CA": certificates["ca"]}
    assert capsudo(daemon.socket, "--", "echo", "env-tls", env=env).stdout == b"env-tls\n"
    partial = {**os.environ, "CAPSUDO_TLS_CERT": certificates["client"]}
    result = capsudo(daemon.socket, "--", "true", env=partial)
    assert result.returncode == 2
    assert "CAPSUDO_TLS_KEY, CAPSUDO_TLS_CA not set" in result.stderr.decode()


# ---- command-line checks -----------------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["-S", "tcp://127.0.0.1:0", "--tls-cert", "x"], "--tls-cert applies only to a tls:// endpoint"),
        (["-S", "tls://127.0.0.1:0", "--tls-cert", "x"], "needs --tls-key, --tls-ca"),
        (["-S", "tcp://127.0.0.1:0", "-m", "0700"], "-m applies only to a Unix socket"),
        (["-S", "tcp://127.0.0.1"], "missing port"),
        (["-S", "ftp://host:1"], "unknown scheme ftp://"),
        (["--tls-cert", "x"], "--tls-cert needs -S"),
    ],
)
def test_daemon_rejects_bad_endpoint_options(args, message):
    result = subprocess.run([CAPSUDOD, *args], capture_output=True, timeout=30)
    assert result.returncode == 2
    assert message in result.stderr.decode()
    assert len(result.stderr.decode().splitlines()) == 1


@pytest.mark.parametrize(
    "args, message, status",
    [
        (["-S", "tcp://127.0.0.1:1", "--tls-ca", "x"], "--tls-ca applies only to a tls:// endpoint", 2),
        (["-S", "/tmp/x.sock", "--tls-ca", "x"], "--tls-ca applies only to a tls:// endpoint", 2),
        (["-S", "tls://127.0.0.1:1"], "needs the CA of the daemon's certificate", 2),
        (["-S", "tcp:127.0.0.1:1"], "write tcp://", 2),
        (["-S", "tcp://127.0.0.1:99999"], "port 99999 is above 65535", 2),
        (["-S", "tcp://127.0.0.1:0"], "port 0 is only for listening", 1),
    ],
)
def test_client_rejects_bad_endpoints_in_one_line(args, message, status):
    result = subprocess.run([CAPSUDO, *args, "--", "true"], capture_output=True, timeout=30)
    assert result.returncode == status
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("capsudo: error: ") and message in lines[0], lines


def test_client_reports_a_refused_tcp_connection(network_daemon_factory):
    daemon = network_daemon_factory("tcp://127.0.0.1:0")
    address = daemon.socket
    daemon.stop()
    result = capsudo(address, "--", "true")
    assert result.returncode == 1
    assert result.stderr.decode().startswith(f"capsudo: error: cannot connect to {address}: ")
    assert "refused" in result.stderr.decode()


def test_tcp_on_a_network_address_warns_about_exposure(network_daemon_factory):
    daemon = network_daemon_factory("tcp://0.0.0.0:0")
    assert "anyone who can reach this port holds the capability" in daemon.log()
    tls_free_loopback = network_daemon_factory("tcp://127.0.0.1:0")
    assert "every local user can connect" in tls_free_loopback.log()


def test_tls_listener_prints_no_exposure_warning(network_daemon_factory, certificates):
    daemon = _tls_daemon(network_daemon_factory, certificates)
    assert "warning" not in daemon.log()


# ---- vsock ----------------------------------------------------------------


def test_vsock_addresses_parse():
    assert parse_endpoint("vsock://3:5000") == VsockEndpoint(3, 5000)
    assert str(parse_endpoint("vsock://any:5000")) == "vsock://any:5000"
    for bad in ("vsock://3", "vsock://x:1", "vsock://3:port", "vsock://4294967296:1"):
        with pytest.raises(ValueError):
            parse_endpoint(bad)


def test_vsock_listening_or_a_clear_error(network_daemon_factory, sock_dir):
    # Without the vsock modules the socket cannot be made: that must be one clear line.
    try:
        daemon = network_daemon_factory("vsock://any:0")
    except AssertionError as failure:
        text = str(failure)
        assert "capsudod: cannot listen on vsock://any:0: " in text, text
        return
    assert re.fullmatch(r"vsock://any:\d+", daemon.socket)
    assert daemon.stop() == 0


def test_vsock_connect_fails_with_a_clear_error():
    # Context id 3 is a guest this machine does not have.
    result = subprocess.run([CAPSUDO, "-S", "vsock://3:5000", "--", "true"], capture_output=True, timeout=60)
    assert result.returncode == 1
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("capsudo: error: cannot connect to vsock://3:5000: "), lines


def test_signals_to_the_client_end_its_network_session(network_daemon_factory):
    daemon = network_daemon_factory("tcp://127.0.0.1:0")
    client = subprocess.Popen([CAPSUDO, "-S", daemon.socket, "--", "sleep", "60"], stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 15
    while "argv" not in daemon.log() and "sleep" not in _running_programs(daemon.process.pid):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    client.send_signal(signal.SIGTERM)
    assert client.wait(15) == 128 + signal.SIGTERM
    # The daemon hangs the program up once its client is gone.
    deadline = time.monotonic() + 15
    while "client hung up" not in daemon.log():
        assert time.monotonic() < deadline, daemon.log()
        time.sleep(0.05)


def _running_programs(pid: int) -> str:
    result = subprocess.run(["ps", "-o", "args=", "--ppid", str(pid)], capture_output=True, text=True)
    return result.stdout
