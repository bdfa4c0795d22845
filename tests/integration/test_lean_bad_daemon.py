"""The `capsudo` command over tcp:// against a daemon that breaks the channel's contract.

A stand-in listens on loopback, reads the client's request up to its End,
and answers with what a broken or hostile daemon would send: bytes that are
no frame, a frame header announcing 4 GiB, data for a stream nobody
announced, a link cut in the middle of a frame or of a session, or nothing
at all. The command must end each case with one line on stderr and exit
status 1 (or, for the silent peer, end on a signal as a terminal user would
end it), never a traceback and never a hang.
"""

from __future__ import annotations

import signal
import socket
import struct
import subprocess
import threading
import time

import pytest

from capsudo.proto import lean

from .daemon_process import CAPSUDO

CONTROL, FDS, DATA, CLOSE = lean.CONTROL_FRAME, lean.FDS_FRAME, lean.STREAM_DATA, lean.STREAM_CLOSE
STDOUT = 2  # the client's stream id for its stdout


def _read_request(conn: socket.socket) -> None:
    """Read the client's frames until its End, as a daemon would before it answers."""
    data = b""
    while True:
        while len(data) >= lean.FRAME_HEADER_SIZE:
            kind, _, length = lean.FRAME_HEADER.unpack(data[: lean.FRAME_HEADER_SIZE])
            if len(data) < lean.FRAME_HEADER_SIZE + length:
                break
            payload = data[lean.FRAME_HEADER_SIZE : lean.FRAME_HEADER_SIZE + length]
            data = data[lean.FRAME_HEADER_SIZE + length :]
            if kind == CONTROL and lean.control_of_frame(payload)[0] == lean.END:
                return
        chunk = conn.recv(65536)
        assert chunk, "the client closed before its End"
        data += chunk


def _finish(conn: socket.socket) -> None:
    """End as a daemon does: our end of file, then read the client's rest, so no reset cuts it short."""
    try:
        conn.shutdown(socket.SHUT_WR)
        conn.settimeout(5)
        while conn.recv(65536):
            pass
    except OSError:
        pass  # the case closed or reset the connection itself


class StandIn:
    """A one-connection daemon stand-in on 127.0.0.1; `answer(conn)` says what it does after the request."""

    def __init__(self, answer) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"tcp://127.0.0.1:{self.listener.getsockname()[1]}"
        self.answer = answer
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.listener.accept()
            with conn:
                _read_request(conn)
                self.answer(conn)
                _finish(conn)
        except BaseException as exc:  # reported by the test, not lost in a thread
            self.failure = exc

    def close(self) -> None:
        self.listener.close()
        self.thread.join(5)
        assert self.failure is None, self.failure


@pytest.fixture
def stand_in():
    started = []

    def start(answer) -> StandIn:
        started.append(StandIn(answer))
        return started[-1]

    yield start
    for server in started:
        server.close()


def _run(endpoint: str, *argv: str, timeout: float = 10) -> subprocess.CompletedProcess:
    return subprocess.run([CAPSUDO, "-S", endpoint, "--", *argv], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=timeout)


def _one_error_line(result: subprocess.CompletedProcess, fragment: str) -> None:
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("capsudo: error: "), result.stderr
    assert fragment in lines[0], result.stderr
    assert result.returncode == 1, result


def test_bytes_that_are_no_frame(stand_in):
    server = stand_in(lambda conn: conn.sendall(b"\x07garbage that is no frame at all"))
    _one_error_line(_run(server.endpoint, "true"), "the daemon sent a bad reply: ")


def test_a_frame_header_announcing_4_gib(stand_in):
    server = stand_in(lambda conn: conn.sendall(lean.frame_header(DATA, STDOUT, 0xFFFFFFFF)))
    _one_error_line(_run(server.endpoint, "true"), "the daemon sent a bad reply: ")


def test_a_control_message_of_unknown_type(stand_in):
    server = stand_in(lambda conn: conn.sendall(lean.control_frame(lean.message(200, b"x"))))
    _one_error_line(_run(server.endpoint, "true"), "the daemon sent a bad reply: ")


def test_data_for_a_stream_never_announced(stand_in):
    server = stand_in(lambda conn: conn.sendall(lean.frame(DATA, 7, b"stray")))
    _one_error_line(_run(server.endpoint, "true"), "StreamData for stream 7, which was never announced")


def test_a_close_for_a_stream_never_announced(stand_in):
    server = stand_in(lambda conn: conn.sendall(lean.frame(CLOSE, 9)))
    _one_error_line(_run(server.endpoint, "true"), "StreamClose for stream 9, which was never announced")


def test_data_on_the_clients_own_stdin(stand_in):
    server = stand_in(lambda conn: conn.sendall(lean.frame(DATA, 0, b"back")))
    _one_error_line(_run(server.endpoint, "true"), "carries no data from the peer")


def test_the_link_cut_in_the_middle_of_a_frame(stand_in):
    def answer(conn):
        conn.sendall(lean.frame_header(DATA, STDOUT, 100) + b"only part")

    _one_error_line(_run(stand_in(answer).endpoint, "true"), "the connection closed in the middle of a frame")


def test_the_link_cut_mid_session_keeps_what_arrived(stand_in):
    server = stand_in(lambda conn: conn.sendall(lean.frame(DATA, STDOUT, b"partial output\n")))
    result = _run(server.endpoint, "true")
    assert result.stdout == "partial output\n"
    _one_error_line(result, "the daemon closed the connection before sending an exit status")


def test_the_link_reset_mid_session(stand_in):
    def answer(conn):
        conn.sendall(lean.frame(DATA, STDOUT, b"before the reset\n"))
        time.sleep(0.1)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()  # a reset, not an end of file

    result = _run(stand_in(answer).endpoint, "true")
    assert result.stdout == "before the reset\n"
    _one_error_line(result, "connection to the daemon lost: the connection (tcp 127.0.0.1:")
    assert "broke: Connection reset by peer" in result.stderr


def test_a_peer_that_never_answers_ends_on_a_signal(stand_in):
    answered = threading.Event()

    def answer(conn):
        answered.wait(20)  # says nothing, holds the connection open

    server = stand_in(answer)
    client = subprocess.Popen([CAPSUDO, "-S", server.endpoint, "--", "true"], stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            client.wait(1)  # there is no reply timeout: a silent program looks the same
        client.send_signal(signal.SIGTERM)
        _, stderr = client.communicate(timeout=5)
    finally:
        answered.set()
        if client.poll() is None:
            client.kill()
            client.wait()
    assert client.returncode == 128 + signal.SIGTERM
    assert "Traceback" not in stderr, stderr
