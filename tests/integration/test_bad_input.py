"""A live daemon facing hostile clients keeps serving a well-behaved one.

Each case connects a raw socket, sends something the contract forbids, and
checks the daemon's answer; meanwhile a real client runs a session.
"""

from __future__ import annotations

import array
import os
import socket
import struct
import threading
import time

import pytest

from capsudo.proto import lean

from .daemon_process import capsudo

HEADER = struct.Struct("<II")


def _connect(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(15)
    sock.connect(path)
    return sock


def _send_fds(sock: socket.socket, data: bytes, fds: list[int]) -> None:
    sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else [])


def _replies(sock: socket.socket) -> list[tuple[int, bytes]]:
    """Every message until the daemon closes.

    A daemon that refuses a client stops reading it, so closing may reset the
    connection once the replies have been read: that counts as the end.
    """
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    replies = []
    while data:
        kind, length = HEADER.unpack(data[:8])
        replies.append((kind, data[8 : 8 + length]))
        data = data[8 + length :]
    return replies


def _assert_refused(sock: socket.socket, fragment: str, status: int = 1) -> None:
    replies = _replies(sock)
    assert [kind for kind, _ in replies] == [lean.ERROR, lean.EXIT], replies
    assert fragment in replies[0][1].decode(), replies[0][1]
    assert lean.exit_status(replies[1][1]) == status


def _stdio() -> tuple[list[int], list[int]]:
    r, w = os.pipe()
    return [r, w, w], [r, w]


@pytest.fixture
def daemon(daemon_factory):
    return daemon_factory("--handshake-timeout", "2", "--max-items", "100", "--max-bytes", "100000")


@pytest.fixture
def bystander(daemon):
    """A well-behaved client running sessions in a loop while the test misbehaves."""
    results: list[int] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            results.append(capsudo(daemon.socket, "--", "sh", "-c", "echo ok").returncode)

    thread = threading.Thread(target=loop)
    thread.start()
    yield
    stop.set()
    thread.join(30)
    assert results and set(results) == {0}, results


def test_random_bytes(daemon, bystander):
    with _connect(daemon.socket) as sock:
        sock.sendall(os.urandom(4096))
        replies = _replies(sock)
    assert [kind for kind, _ in replies] == [lean.ERROR, lean.EXIT]


def test_length_over_16_mib(daemon, bystander):
    with _connect(daemon.socket) as sock:
        sock.sendall(HEADER.pack(lean.ARG, 16 * 1024 * 1024 + 1))
        _assert_refused(sock, "limit")


def test_truncated_message_then_close(daemon, bystander):
    with _connect(daemon.socket) as sock:
        sock.sendall(lean.arg("echo")[:-2])
        sock.shutdown(socket.SHUT_WR)
        _assert_refused(sock, "middle of a message")


@pytest.mark.parametrize("count", [0, 2, 4])
def test_fd_with_wrong_number_of_descriptors(daemon, bystander, count):
    fds = [os.open(os.devnull, os.O_RDWR) for _ in range(count)]
    try:
        with _connect(daemon.socket) as sock:
            # One send: the daemon refuses at the Fd and closes, so an End sent
            # after it could meet a closed connection.
            _send_fds(sock, lean.fd(count) + lean.end(), fds)
            _assert_refused(sock, f"expected 3 descriptors")
    finally:
        for fd in fds:
            os.close(fd)


def test_fd_announcing_three_with_none_attached(daemon, bystander):
    with _connect(daemon.socket) as sock:
        sock.sendall(lean.fd(3) + lean.end())
        _assert_refused(sock, "Fd announced 3 descriptors but 0 arrived")


def test_descriptors_on_an_arg_are_closed_and_ignored(daemon, bystander):
    r, w = os.pipe()
    with _connect(daemon.socket) as sock:
        _send_fds(sock, lean.arg("echo"), [w])
        os.close(w)
        sock.sendall(lean.end())
        _assert_refused(sock, "no descriptors were delegated")
    # The daemon kept no copy of the write end: the reader sees end-of-file.
    assert os.read(r, 1) == b""
    os.close(r)


def test_unknown_message_type(daemon, bystander):
    with _connect(daemon.socket) as sock:
        sock.sendall(HEADER.pack(42, 0))
        _assert_refused(sock, "unknown message type 42")


def test_invalid_utf8(daemon, bystander):
    with _connect(daemon.socket) as sock:
        sock.sendall(lean.message(lean.ARG, b"\xff\xfe"))
        _assert_refused(sock, "not valid UTF-8")


def test_nul_inside_an_argument(daemon, bystander):
    with _connect(daemon.socket) as sock:
        sock.sendall(lean.arg("ec\0ho"))
        _assert_refused(sock, "NUL")


def test_too_many_arguments(daemon, bystander):
    with _connect(daemon.socket) as sock:
        sock.sendall(b"".join(lean.arg("x") for _ in range(101)))
        _assert_refused(sock, "too many arguments")


def test_too_many_bytes(daemon, bystander):
    with _connect(daemon.socket) as sock:
        sock.sendall(lean.arg("x" * 60000) + lean.env("K=" + "y" * 60000))
        _assert_refused(sock, "the 100000 a client may send before End")


def test_client_that_says_nothing_is_timed_out(daemon, bystander):
    started = time.monotonic()
    with _connect(daemon.socket) as sock:
        _assert_refused(sock, "handshake not completed within 2s")
    assert 1.5 < time.monotonic() - started < 6


def test_client_that_sends_an_exit_is_refused(daemon, bystander):
    with _connect(daemon.socket) as sock:
        sock.sendall(lean.message(lean.EXIT, struct.pack("<i", 0)))
        _assert_refused(sock, "a client may not send Exit")


def test_well_formed_session_from_a_raw_client(daemon):
    fds, mine = _stdio()
    r, w = mine
    with _connect(daemon.socket) as sock:
        sock.sendall(lean.arg("echo") + lean.arg("raw") + lean.session_type(lean.NON_INTERACTIVE))
        _send_fds(sock, lean.fd(3), fds)
        sock.sendall(lean.end())
        os.close(w)
        replies = _replies(sock)
    assert replies == [(lean.EXIT, struct.pack("<i", 0))]
    assert os.read(r, 100) == b"raw\n"
    os.close(r)
