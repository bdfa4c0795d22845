"""The blocking Unix client against a far end that answers at once and stops reading."""

from __future__ import annotations

import os
import socket
import threading

import pytest

from capsudo.core import ClientError, run
from capsudo.proto import lean

# Far more than a Unix socket's queue holds, so the client is still sending
# when the far end closes.
LARGE_ARGUMENT = "x" * (4 * 1024 * 1024)


def _answer_and_close(listener: socket.socket, reply: bytes, closed: threading.Event) -> None:
    connection, _ = listener.accept()
    with connection:
        connection.sendall(reply)
    closed.set()


@pytest.fixture
def refusing_endpoint(tmp_path):
    def start(reply: bytes) -> str:
        path = str(tmp_path / "refusing")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen(1)
        closed = threading.Event()
        thread = threading.Thread(target=_answer_and_close, args=(listener, reply, closed), daemon=True)
        thread.start()
        started.append((listener, thread))
        return path

    started: list = []
    yield start
    for listener, thread in started:
        thread.join(10)
        listener.close()


def _devnull_run(argv, endpoint):
    null = os.open(os.devnull, os.O_RDWR)
    try:
        return run(argv, endpoint=endpoint, stdin=null, stdout=null, stderr=null)
    finally:
        os.close(null)


def test_a_refusal_sent_before_the_request_was_read_reaches_the_caller(refusing_endpoint):
    refusal = lean.message(lean.ERROR, b"too many sessions; try again later")
    endpoint = refusing_endpoint(refusal + lean.message(lean.EXIT, (1).to_bytes(4, "little")))
    result = _devnull_run(["echo", LARGE_ARGUMENT], endpoint)
    assert (result.status, result.errors) == (1, ["too many sessions; try again later"])


def test_a_far_end_that_closes_without_an_answer_is_still_a_handshake_failure(refusing_endpoint):
    endpoint = refusing_endpoint(b"")
    with pytest.raises(ClientError, match="failed during the handshake"):
        _devnull_run(["echo", LARGE_ARGUMENT], endpoint)
