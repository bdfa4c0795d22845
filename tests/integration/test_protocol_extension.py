"""A message type added to the session protocol's table, and nowhere else.

The test's own subclass of SessionProtocol adds two entries: a client's
`Word` (type 101, which means what Arg means) and a daemon's `Notice` (type
100, which means what Error means). The daemon's session driver and the
blocking client's driver, given that protocol, handle both as the table
says, though neither names them: the proof that a rule of the conversation
lives in one place.
"""

from __future__ import annotations

import array
import os
import socket
from dataclasses import dataclass
from typing import ClassVar

import trio

from capsudo.core import ClientRequest, Policy, run_unix_session, serve_session
from capsudo.proto import CLIENT, DAEMON, MESSAGE_CLASSES, SessionProtocol, encode_message, lean
from capsudo.proto._session import CONFIGURING, RUNNING
from capsudo.transport import UnixChannel

WORD, NOTICE = 101, 100


@dataclass(frozen=True)
class Word:
    value: str
    type: ClassVar[int] = WORD

    def payload(self) -> bytes:
        return self.value.encode()

    @classmethod
    def from_payload(cls, payload: bytes) -> "Word":
        return cls(lean.exec_string(payload, "Word"))


@dataclass(frozen=True)
class Notice:
    text: str
    type: ClassVar[int] = NOTICE

    def payload(self) -> bytes:
        return self.text.encode()

    @classmethod
    def from_payload(cls, payload: bytes) -> "Notice":
        return cls(lean.text(payload))


class ExtendedProtocol(SessionProtocol):
    RULES = {
        **SessionProtocol.RULES,
        (CLIENT, CONFIGURING, WORD): (CONFIGURING, "arg"),
        (DAEMON, RUNNING, NOTICE): (RUNNING, "error"),
    }
    MESSAGE_CLASSES = {**MESSAGE_CLASSES, WORD: Word, NOTICE: Notice}


def _client_bytes(*messages) -> bytes:
    return b"".join(encode_message(m) if not isinstance(m, bytes) else m for m in messages)


def test_the_daemon_driver_runs_a_request_spelled_with_the_new_message(tmp_path):
    from capsudo.proto import End, Fd, SessionKind, SessionType

    out = tmp_path / "out"

    async def scenario():
        daemon_end, client_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        channel = UnixChannel(daemon_end, classes=ExtendedProtocol.MESSAGE_CLASSES)
        with open(out, "wb") as sink, open(os.devnull, "rb") as nothing:
            words = b"".join(lean.message(WORD, w.encode()) for w in ("echo", "said", "with", "Word"))
            client_end.sendall(words + encode_message(SessionType(SessionKind.NON_INTERACTIVE)))
            client_end.sendmsg([encode_message(Fd(3))],
                               [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                 array.array("i", [nothing.fileno(), sink.fileno(), sink.fileno()]))])
            client_end.sendall(encode_message(End()))
            record = await serve_session(channel, Policy(), protocol=ExtendedProtocol)
        replies = client_end.recv(64)
        client_end.close()
        return record, replies

    record, replies = trio.run(scenario)
    assert out.read_bytes() == b"said with Word\n"
    assert record.argv == ["echo", "said", "with", "Word"]
    assert replies == lean.message(lean.EXIT, lean.exit_payload(0))


def test_a_stock_daemon_refuses_the_message_its_table_lacks(tmp_path):
    async def scenario():
        daemon_end, client_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        channel = UnixChannel(daemon_end)
        client_end.sendall(lean.message(WORD, b"echo"))
        record = await serve_session(channel, Policy())
        replies = client_end.recv(256)
        client_end.close()
        return record, replies

    record, replies = trio.run(scenario)
    assert record.outcome == "refused: unknown message type 101"
    assert lean.message(lean.ERROR, b"unknown message type 101") in replies


def test_the_client_driver_shows_the_new_message_as_the_table_says(sock_dir):
    path = os.path.join(sock_dir, "stand-in.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)

    def stand_in_daemon() -> None:
        connection, _ = listener.accept()
        with connection:
            received = b""
            while lean.end() not in received:
                received += connection.recv(4096)
            connection.sendall(lean.message(NOTICE, b"a notice from the daemon")
                               + lean.message(lean.EXIT, lean.exit_payload(3)))

    async def scenario():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, stand_in_daemon)
            return await trio.to_thread.run_sync(
                lambda: run_unix_session(path, ClientRequest(argv=["true"]), protocol=ExtendedProtocol))

    try:
        result = trio.run(scenario)
    finally:
        listener.close()
    assert (result.status, result.errors) == (3, ["a notice from the daemon"])
