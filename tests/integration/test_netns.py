"""A capability carried across two network namespaces that the test creates.

Namespace A holds capsudod with a pinned command on a Unix socket and a
proxy exposing it on tls:// on A's end of a veth pair; namespace B holds a
proxy that exposes that TLS endpoint as a local Unix socket, and the client.
The addresses (10.250.0.1/30 and 10.250.0.2/30) exist only inside these two
namespaces, so no traffic leaves them.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pexpect
import pytest

from .daemon_process import CAPSUDO, CAPSUDOD, wait_for_path
from .proxy_process import start_proxy

pytestmark = [pytest.mark.root, pytest.mark.slow]

ADDRESS_A, ADDRESS_B = "10.250.0.1", "10.250.0.2"
PORT = 4711
PINNED = ["-f", "--", "sh", "-c",
          "if [ -t 0 ]; then echo tty:yes; else echo tty:no; fi; echo pinned-err >&2; cat; exit 7"]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture
def namespaces():
    """(A, B): two fresh namespaces joined by a veth pair, removed afterwards whatever happened."""
    suffix = secrets.token_hex(3)
    a, b = f"cs-a-{suffix}", f"cs-b-{suffix}"
    try:
        _ip("netns", "add", a)
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        reason = exc.stderr.decode().strip() if isinstance(exc, subprocess.CalledProcessError) else str(exc)
        pytest.skip(f"cannot create a network namespace: {reason}")
    created = [a]
    try:
        _ip("netns", "add", b)
        created.append(b)
        _ip("link", "add", f"va{suffix}", "netns", a, "type", "veth", "peer", "name", f"vb{suffix}", "netns", b)
        for name, link, address in ((a, f"va{suffix}", ADDRESS_A), (b, f"vb{suffix}", ADDRESS_B)):
            _ip("-n", name, "link", "set", "lo", "up")
            _ip("-n", name, "addr", "add", f"{address}/30", "dev", link)
            _ip("-n", name, "link", "set", link, "up")
        yield a, b
    finally:
        for name in created:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


@pytest.fixture
def certificates(sock_dir):
    """A CA, a server certificate for A's address and a client certificate, as files."""
    import trustme

    ca = trustme.CA()
    server = ca.issue_cert(ADDRESS_A)
    client = ca.issue_cert("capsudo-client@b")
    directory = Path(sock_dir)
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    server.cert_chain_pems[0].write_to_path(str(directory / "server.pem"))
    server.private_key_pem.write_to_path(str(directory / "server.key"))
    client.cert_chain_pems[0].write_to_path(str(directory / "client.pem"))
    client.private_key_pem.write_to_path(str(directory / "client.key"))
    return directory


@pytest.fixture
def crossing(namespaces, certificates, sock_dir):
    """The whole deployment; yields (namespace B, B's local socket, proxy A, daemon log path)."""
    a, b = namespaces
    started: list[subprocess.Popen] = []
    try:
        daemon_socket = f"{sock_dir}/cap.sock"
        daemon_log = Path(sock_dir) / "capsudod.log"
        with open(daemon_log, "wb") as log:
            daemon = subprocess.Popen(["ip", "netns", "exec", a, CAPSUDOD, "-S", daemon_socket, *PINNED],
                                      stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        started.append(daemon)
        wait_for_path(daemon_socket, timeout=20)
        proxy_a = start_proxy(
            f"tls://{ADDRESS_A}:{PORT}", f"unix://{daemon_socket}",
            "--tls-cert", str(certificates / "server.pem"), "--tls-key", str(certificates / "server.key"),
            "--tls-client-ca", str(certificates / "ca.pem"),
            log_path=Path(sock_dir) / "proxy-a.log", prefix=("ip", "netns", "exec", a),
        )
        started.append(proxy_a.process)
        proxy_b = start_proxy(
            f"unix://{sock_dir}/local.sock", f"tls://{ADDRESS_A}:{PORT}",
            "--target-tls-cert", str(certificates / "client.pem"), "--target-tls-key", str(certificates / "client.key"),
            "--target-tls-ca", str(certificates / "ca.pem"),
            log_path=Path(sock_dir) / "proxy-b.log", prefix=("ip", "netns", "exec", b),
        )
        started.append(proxy_b.process)
        yield b, proxy_b.listen, proxy_a, daemon_log
    finally:
        for process in reversed(started):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def _capsudo_in(namespace: str, socket_path: str, *argv: str, input: bytes | None = None):
    return subprocess.run(["ip", "netns", "exec", namespace, CAPSUDO, "-S", socket_path, *argv],
                          input=input, capture_output=True, timeout=60)


def test_namespaces_are_really_apart(namespaces):
    a, b = namespaces
    # B reaches A only over the veth pair: A's loopback is not B's.
    seen_from_b = subprocess.run(["ip", "-n", b, "-o", "addr", "show"], capture_output=True, text=True, check=True)
    assert ADDRESS_B in seen_from_b.stdout and ADDRESS_A not in seen_from_b.stdout


def test_pinned_command_across_namespaces_gives_output_and_status(crossing):
    b, local_socket, proxy_a, daemon_log = crossing
    result = _capsudo_in(b, local_socket, "--", "rm", "-rf", "/", input=b"")
    assert result.returncode == 7, result.stderr
    assert result.stdout == b"tty:no\n"
    # The pinned endpoint ignored the arguments, and says so after the output.
    assert result.stderr.startswith(b"pinned-err\ncapsudo: note: this endpoint ignores arguments (")
    # The session really came over the veth pair, from B's address; the
    # proxy writes its line once the session is over, a moment after the client's end.
    deadline = time.monotonic() + 5
    while f"session from tls {ADDRESS_B}:" not in proxy_a.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert f"session from tls {ADDRESS_B}:" in proxy_a.log()


def test_stdin_is_piped_across_namespaces(crossing):
    b, local_socket, _, _ = crossing
    payload = b"".join(b"line %d across namespaces\n" % n for n in range(20000))
    result = _capsudo_in(b, local_socket, input=payload)
    assert result.returncode == 7, result.stderr
    assert result.stdout == b"tty:no\n" + payload


@pytest.mark.terminal
def test_interactive_session_across_namespaces(crossing):
    b, local_socket, _, daemon_log = crossing
    child = pexpect.spawn("ip", ["netns", "exec", b, CAPSUDO, "-S", local_socket], timeout=30,
                          env={**os.environ, "TERM": "xterm"}, dimensions=(30, 100))
    child.logfile_read = sys.stdout.buffer if os.environ.get("CAPSUDO_TEST_VERBOSE") else None
    try:
        child.expect_exact("tty:yes")
        child.sendline("typed in namespace b")
        # Once as the terminal's echo, once as cat's output.
        child.expect_exact("typed in namespace b")
        child.expect_exact("typed in namespace b")
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 7, daemon_log.read_text()
