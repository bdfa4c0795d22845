"""A live capsudod on tcp:// facing hostile peers keeps serving a well-behaved client.

Each case opens a raw TCP connection, sends bytes that break the
multiplexed channel's contract, and checks the daemon's answer (one Error
naming the fault, then Exit 1) and its log; a real `capsudo` session runs
across each case and must finish intact.
"""

from __future__ import annotations

import os
import random
import socket
import struct
import subprocess
import time
from contextlib import contextmanager

import pytest

from capsudo.proto import (Arg, ControlFrame, Direction, End, FdsFrame, SessionKind, SessionType, StreamClose,
                           StreamData, encode_frame, lean)

from .daemon_process import CAPSUDO, CAPSUDOD, capsudo

FRAME_HEADER = struct.Struct("<BII")  # kind, stream id, payload length
CONTROL_HEADER = struct.Struct("<II")  # message type, payload length
CONTROL, FDS = 1, 2
# The daemon's memory may grow this much while a peer does not read: its
# buffers are a few hundred KiB per stream, so this leaves room for the
# interpreter's own noise and nothing for a program's unbounded output.
RSS_ALLOWANCE = 24 * 1024 * 1024


@pytest.fixture
def tcp_daemon(network_daemon_factory):
    return network_daemon_factory("tcp://127.0.0.1:0")


def _address(daemon) -> tuple[str, int]:
    host, _, port = daemon.socket.removeprefix("tcp://").rpartition(":")
    return host, int(port)


def _connect(daemon, **options) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    for option, value in options.items():
        sock.setsockopt(socket.SOL_SOCKET, getattr(socket, option), value)
    sock.settimeout(15)
    sock.connect(_address(daemon))
    return sock


def _replies(sock: socket.socket) -> list[tuple[int, bytes]]:
    """The control messages the daemon sends until it closes: (type, payload)."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    messages = []
    while data:
        kind, _, length = FRAME_HEADER.unpack(data[:9])
        assert kind == CONTROL, f"unexpected frame kind {kind} from the daemon"
        body = data[9 : 9 + length]
        message_type, message_length = CONTROL_HEADER.unpack(body[:8])
        messages.append((message_type, body[8 : 8 + message_length]))
        data = data[9 + length :]
    return messages


def _assert_refused(sock: socket.socket, fragment: str) -> None:
    replies = _replies(sock)
    assert [kind for kind, _ in replies] == [lean.ERROR, lean.EXIT], replies
    assert fragment in lean.text(replies[0][1]), replies[0][1]
    assert lean.exit_status(replies[1][1]) == 1


def _wait_for_log(daemon, fragment: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while fragment not in daemon.log():
        assert time.monotonic() < deadline, f"{fragment!r} not in the log:\n{daemon.log()}"
        time.sleep(0.05)


@contextmanager
def well_behaved_client(daemon):
    """A session that starts before the hostile peer and must end intact after it."""
    client = subprocess.Popen(
        [CAPSUDO, "-S", daemon.socket, "--", "sh", "-c", "cat; echo served"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        client.stdin.write(b"before\n")
        client.stdin.flush()
        # The first line coming back proves the session is running.
        assert client.stdout.readline() == b"before\n"
        yield client
        client.stdin.write(b"after\n")
        client.stdin.close()
        assert client.wait(30) == 0, client.stderr.read()
        assert client.stdout.read() == b"after\nserved\n"
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    # And a new client is served too.
    assert capsudo(daemon.socket, "--", "echo", "next").stdout == b"next\n"


def _handshake(*argv: str) -> bytes:
    """A valid non-interactive request, as the channel carries it: no Fd message, an Fds frame."""
    frames = [ControlFrame(Arg(value)) for value in argv]
    frames.append(ControlFrame(SessionType(SessionKind.NON_INTERACTIVE)))
    frames.append(FdsFrame(((0, Direction.READ), (2, Direction.WRITE), (4, Direction.WRITE))))
    frames.append(ControlFrame(End()))
    return b"".join(encode_frame(frame) for frame in frames)


@pytest.mark.parametrize("seed", range(4))
def test_random_bytes(tcp_daemon, seed):
    with well_behaved_client(tcp_daemon):
        with _connect(tcp_daemon) as sock:
            sock.sendall(random.Random(seed).randbytes(4096))
            # Noise that happens to start a long frame waits for its end: there is none.
            sock.shutdown(socket.SHUT_WR)
            replies = _replies(sock)
        assert [kind for kind, _ in replies] == [lean.ERROR, lean.EXIT], replies
        assert lean.exit_status(replies[1][1]) == 1
    assert "outcome=refused: " in tcp_daemon.log()


def test_a_frame_header_announcing_4_gib(tcp_daemon):
    with well_behaved_client(tcp_daemon):
        with _connect(tcp_daemon) as sock:
            # The header alone, and the link stays open: the length is refused
            # before a byte of payload is waited for or allocated.
            sock.sendall(FRAME_HEADER.pack(3, 0, 0xFFFFFFFF))
            _assert_refused(sock, "frame announces 4294967295 bytes, more than the limit")
    _wait_for_log(tcp_daemon, "refused: frame announces 4294967295 bytes")


def test_data_for_a_stream_never_announced(tcp_daemon):
    with well_behaved_client(tcp_daemon):
        with _connect(tcp_daemon) as sock:
            sock.sendall(encode_frame(ControlFrame(Arg("cat"))) + encode_frame(StreamData(0, b"who am I?")))
            _assert_refused(sock, "StreamData for stream 0, which was never announced")


def test_stream_close_for_an_unknown_stream(tcp_daemon):
    with well_behaved_client(tcp_daemon):
        with _connect(tcp_daemon) as sock:
            sock.sendall(encode_frame(StreamClose(6)))
            _assert_refused(sock, "StreamClose for stream 6, which was never announced")


def test_fds_frame_with_a_bad_direction(tcp_daemon):
    with well_behaved_client(tcp_daemon):
        with _connect(tcp_daemon) as sock:
            sock.sendall(FRAME_HEADER.pack(FDS, 0, 5) + struct.pack("<IB", 0, 7))
            _assert_refused(sock, "unknown direction 7")


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS line")


def _children(pid: int) -> list[str]:
    result = subprocess.run(["ps", "-o", "args=", "--ppid", str(pid)], capture_output=True, text=True)
    return result.stdout.splitlines()


def test_a_peer_that_stops_reading_while_the_program_writes(tcp_daemon):
    pid = tcp_daemon.process.pid
    # Warm the daemon up with one full session, so its baseline includes a session's code.
    assert capsudo(tcp_daemon.socket, "--", "head", "-c", "1000000", "/dev/zero").returncode == 0
    baseline = _rss(pid)
    with well_behaved_client(tcp_daemon):
        with _connect(tcp_daemon, SO_RCVBUF=4096) as stalled:
            # An endless writer, and a peer that never reads a byte of it.
            stalled.sendall(_handshake("cat", "/dev/zero"))
            deadline = time.monotonic() + 15
            while not any(args == "cat /dev/zero" for args in _children(pid)):
                assert time.monotonic() < deadline, "the program did not start"
                time.sleep(0.05)
            samples = []
            for _ in range(20):  # 4 s: an unbounded daemon would have taken gigabytes by then
                time.sleep(0.2)
                samples.append(_rss(pid))
            assert max(samples) - baseline < RSS_ALLOWANCE, (baseline, samples)
            # The writer is held up, not finished or killed.
            assert "cat /dev/zero" in _children(pid)
        # The peer left: its program is hung up and the session logged.
        _wait_for_log(tcp_daemon, "argv='cat /dev/zero'")
    log_line = next(line for line in tcp_daemon.log().splitlines() if "argv='cat /dev/zero'" in line)
    assert "outcome=client hung up" in log_line
    assert tcp_daemon.process.poll() is None


def test_the_frame_cap_is_a_flag(network_daemon_factory):
    daemon = network_daemon_factory("tcp://127.0.0.1:0", "--max-frame", "300000")
    with well_behaved_client(daemon):
        with _connect(daemon) as sock:
            sock.sendall(FRAME_HEADER.pack(3, 0, 300001))
            _assert_refused(sock, "frame announces 300001 bytes, more than the limit of 300000")


def test_a_small_stream_buffer_still_carries_everything(network_daemon_factory):
    daemon = network_daemon_factory("tcp://127.0.0.1:0", "--stream-buffer", "1024")
    payload = os.urandom(2_000_000)
    result = capsudo(daemon.socket, "--", "cat", input=payload)
    assert result.returncode == 0
    assert result.stdout == payload


@pytest.mark.parametrize(
    "args, message",
    [
        (["-S", "tcp://127.0.0.1:0", "--max-frame", "1000"], "--max-frame must be a finite number of at least 262144"),
        (["-S", "/tmp/unused.sock", "--stream-buffer", "4096"], "--stream-buffer applies only to tcp://, tls:// and vsock://"),
        (["--max-frame", "300000"], "--max-frame needs -S"),
    ],
)
def test_channel_limit_flags_are_checked(args, message):
    result = subprocess.run([CAPSUDOD, *args], capture_output=True, timeout=30)
    assert result.returncode == 2
    assert message in result.stderr.decode()
