"""A client that leaves while its stdin stream is full gets its program hung up.

The attack: send the daemon far more stdin than its stream buffer holds, to
a program that does not read it, then go. The daemon stops reading the
connection at the buffer's limit, so it sees neither the client's end of
file (behind the unread data) nor, by itself, a reset; without probing it
the program ran on until the daemon was stopped, holding a session slot.
Each case runs a live daemon on tcp:// or tls:// (or capsudo-proxy --stdio
on pipes, as ssh runs it) and a well-behaved client across it.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from capsudo.proto import (Arg, ControlFrame, Direction, End, FdsFrame, SessionKind, SessionType, StreamData,
                           encode_frame)

from .daemon_process import CAPSUDO, capsudo
from .proxy_process import CAPSUDO_PROXY

# How soon after the client left its program must be gone: the daemon notices
# in about 2.3 s (two probe intervals and the settle time), SIGHUP does the rest.
HANG_UP_BOUND = 6.0

# A peer in the standard library only, so that the scratch user's system
# Python runs it: the request, then stdin frames until the daemon stops
# taking them for a second, then it closes or waits to be killed.
RAW_CLIENT = r"""
import socket, ssl, struct, sys, time
host, port, leaving, request = sys.argv[1], int(sys.argv[2]), sys.argv[3], bytes.fromhex(sys.argv[4])
sock = socket.create_connection((host, port))
if len(sys.argv) > 5:
    context = ssl.create_default_context(cafile=sys.argv[6])
    context.load_cert_chain(sys.argv[5])
    sock = context.wrap_socket(sock, server_hostname=host)
sock.sendall(request)
frame = struct.pack("<BII", 3, 0, 65536) + bytes(65536)
sock.settimeout(1.0)
sent = 0
try:
    while True:
        sock.sendall(frame)
        sent += len(frame)
except TimeoutError:
    pass
print(sent, flush=True)
if leaving == "closes":
    sock.close()
else:
    time.sleep(600)
"""


@pytest.fixture(scope="module")
def certificates():
    """PEM paths of a CA, a daemon's and a client's certificate, readable by a scratch user.

    In a directory of their own under /tmp rather than pytest's tree, whose
    top pytest makes private again whenever a test session starts.
    """
    trustme = pytest.importorskip("trustme")
    directory = Path(tempfile.mkdtemp(prefix="cs-tls-", dir="/tmp"))
    os.chmod(directory, 0o755)
    ca = trustme.CA()
    paths = {name: str(directory / f"{name}.pem") for name in ("ca", "daemon", "client")}
    ca.cert_pem.write_to_path(paths["ca"])
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(paths["daemon"])
    ca.issue_cert("client.capsudo.test").private_key_and_cert_chain_pem.write_to_path(paths["client"])
    for path in paths.values():
        os.chmod(path, 0o644)
    yield paths
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(params=["tcp", "tls"])
def channel(request, network_daemon_factory, certificates):
    """(start, capsudo's flags, the raw client's TLS arguments) for a daemon on tcp:// or tls://."""
    if request.param == "tcp":
        return (lambda: network_daemon_factory("tcp://127.0.0.1:0")), [], []

    def start():
        return network_daemon_factory(
            "tls://127.0.0.1:0", "--tls-cert", certificates["daemon"], "--tls-key", certificates["daemon"],
            "--tls-client-ca", certificates["ca"],
        )

    flags = ["--tls-cert", certificates["client"], "--tls-key", certificates["client"], "--tls-ca", certificates["ca"]]
    return start, flags, [certificates["client"], certificates["ca"]]


def _request(*argv: str) -> bytes:
    """A non-interactive request as the channel carries it: stdin on stream 0, stdout and stderr on 2 and 4."""
    frames = [ControlFrame(Arg(value)) for value in argv]
    frames.append(ControlFrame(SessionType(SessionKind.NON_INTERACTIVE)))
    frames.append(FdsFrame(((0, Direction.READ), (2, Direction.WRITE), (4, Direction.WRITE))))
    frames.append(ControlFrame(End()))
    return b"".join(encode_frame(frame) for frame in frames)


def _descendants(pid: int) -> dict[int, str]:
    """pid: command line of every process below `pid`."""
    table = subprocess.run(["ps", "-e", "-o", "pid=,ppid=,args="], capture_output=True, text=True).stdout
    parents, args = {}, {}
    for line in table.splitlines():
        child, parent, command = (line.split(None, 2) + [""])[:3]
        parents[int(child)], args[int(child)] = int(parent), command
    found = {}
    for child in parents:
        ancestor = parents[child]
        while ancestor > 1:
            if ancestor == pid:
                found[child] = args[child]
                break
            ancestor = parents.get(ancestor, 0)
    return found


def _wait_for_program(daemon_pid: int, command: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while command not in _descendants(daemon_pid).values():
        assert time.monotonic() < deadline, f"{command!r} did not start"
        time.sleep(0.05)


def _seconds_until_gone(daemon_pid: int, command: str, timeout: float = HANG_UP_BOUND) -> float:
    started = time.monotonic()
    while command in _descendants(daemon_pid).values():
        assert time.monotonic() - started < timeout, f"{command!r} still runs {timeout} s after its client left"
        time.sleep(0.05)
    return time.monotonic() - started


def _assert_logged_as_departure(daemon, command: str, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while True:
        lines = [line for line in daemon.log().splitlines() if f"argv='{command}'" in line]
        if lines:
            assert "outcome=client hung up" in lines[0], lines[0]
            return
        assert time.monotonic() < deadline, f"no session line for {command!r}:\n{daemon.log()}"
        time.sleep(0.05)


@contextmanager
def well_behaved_client(socket: str, flags=()):
    """A session that starts before the attack and must end intact after it, then a new one."""
    client = subprocess.Popen([CAPSUDO, "-S", socket, *flags, "--", "sh", "-c", "cat; echo served"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        client.stdin.write(b"before\n")
        client.stdin.flush()
        assert client.stdout.readline() == b"before\n"
        yield
        client.stdin.write(b"after\n")
        client.stdin.close()
        assert client.wait(15) == 0, client.stderr.read()
        assert client.stdout.read() == b"after\nserved\n"
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    assert capsudo(socket, *flags, "--", "echo", "next").stdout == b"next\n"


@pytest.mark.root
@pytest.mark.parametrize("leaving", ["closes", "is killed"])
def test_a_raw_client_that_fills_stdin_then_leaves_gets_its_program_hung_up(channel, scratch_user, leaving):
    start, flags, raw_tls = channel
    _, uid, gid = scratch_user
    daemon = start()
    host, _, port = daemon.socket.split("://")[1].rpartition(":")
    command = "sleep 117"
    with well_behaved_client(daemon.socket, flags):
        attacker = subprocess.Popen(
            ["/usr/bin/python3", "-I", "-c", RAW_CLIENT, host, port, leaving, _request(*command.split()).hex(), *raw_tls],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, user=uid, group=gid, extra_groups=[],
        )
        try:
            sent = int(attacker.stdout.readline() or 0)  # once the daemon stopped taking stdin
            assert sent > 256 * 1024, attacker.stderr.read()
            _wait_for_program(daemon.process.pid, command)
            if leaving == "is killed":
                attacker.send_signal(signal.SIGKILL)
            assert attacker.wait(10) in (0, -signal.SIGKILL)
            _seconds_until_gone(daemon.process.pid, command)
        finally:
            if attacker.poll() is None:
                attacker.kill()
                attacker.wait()
        _assert_logged_as_departure(daemon, command)
    assert daemon.process.poll() is None


def test_a_capsudo_client_killed_with_its_stdin_full_gets_its_program_hung_up(channel):
    start, flags, _ = channel
    daemon = start()
    command = "sleep 118"
    with well_behaved_client(daemon.socket, flags):
        # head -c 8000000 /dev/zero | capsudo -S … -- sleep 118
        source = subprocess.Popen(["head", "-c", "8000000", "/dev/zero"], stdout=subprocess.PIPE)
        client = subprocess.Popen([CAPSUDO, "-S", daemon.socket, *flags, "--", *command.split()],
                                  stdin=source.stdout, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        source.stdout.close()
        try:
            _wait_for_program(daemon.process.pid, command)
            time.sleep(1.5)
            # Still writing: the stdin stream, the link and the pipe are all full.
            assert source.poll() is None and client.poll() is None
            client.send_signal(signal.SIGKILL)
            client.wait(10)
            _seconds_until_gone(daemon.process.pid, command)
        finally:
            for process in (client, source):
                if process.poll() is None:
                    process.kill()
                process.wait()
        _assert_logged_as_departure(daemon, command)
    assert daemon.process.poll() is None


def test_a_stdio_peer_that_leaves_with_stdin_full_gets_its_program_hung_up(daemon_factory):
    # capsudo-proxy --stdio as ssh runs it: the channel on pipes, the daemon behind it on a Unix socket.
    daemon = daemon_factory()
    command = "sleep 119"
    with well_behaved_client(daemon.socket):
        proxy = subprocess.Popen([CAPSUDO_PROXY, "--stdio", daemon.socket], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            link = proxy.stdin.fileno()
            os.write(link, _request(*command.split()))
            _wait_for_program(daemon.process.pid, command)
            # Whole stdin frames until the proxy takes nothing for a second.
            os.set_blocking(link, False)
            frame = encode_frame(StreamData(0, bytes(65536)))
            sent, unsent = 0, frame
            while select.select([], [link], [], 1.0)[1]:
                try:
                    written = os.write(link, unsent)
                except BlockingIOError:
                    continue
                sent += written
                unsent = unsent[written:] or frame
            assert sent > 256 * 1024
            # ssh's side goes: both pipes close.
            proxy.stdin.close()
            proxy.stdout.close()
            _seconds_until_gone(daemon.process.pid, command)
            assert proxy.wait(10) == 0
        finally:
            if proxy.poll() is None:
                proxy.kill()
                proxy.wait()
        _assert_logged_as_departure(daemon, command)
    assert daemon.process.poll() is None
