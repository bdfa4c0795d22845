"""BlockingUnixConnection (the one-shot client's path) against a trio UnixChannel."""

from __future__ import annotations

import fcntl
import os
import struct

import pytest
import trio

from capsudo.proto import (Arg, End, Env, Error, Exit, Fd, ProtocolError, SessionKind, SessionType,
                           Winsize, lean)
from capsudo.transport import BlockingUnixConnection, open_unix_listener

pytestmark = pytest.mark.deadline(10)


async def test_one_exchange_with_descriptors(sock_dir):
    path = os.path.join(sock_dir, "s")
    r, w = os.pipe()
    replies = []

    def client() -> None:
        with BlockingUnixConnection(path) as connection:
            connection.send(
                lean.env("TERM=dumb") + lean.arg("echo") + lean.arg("hi")
                + lean.session_type(lean.NON_INTERACTIVE) + lean.winsize(24, 80)
            )
            connection.send(lean.fd(3) + lean.end(), [w, w, w])
            while (reply := connection.receive()) is not None:
                replies.append(reply)

    try:
        async with await open_unix_listener(path) as listener:
            with trio.fail_after(10):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(trio.to_thread.run_sync, client)
                    async with await listener.accept() as server:
                        assert server.peer.pid == os.getpid()
                        messages = []
                        while True:
                            message, fds = await server.receive()
                            messages.append(message)
                            if isinstance(message, Fd):
                                stdio = fds
                            if message == End():
                                break
                        assert messages == [
                            Env("TERM=dumb"), Arg("echo"), Arg("hi"),
                            SessionType(SessionKind.NON_INTERACTIVE), Winsize(24, 80), Fd(3), End(),
                        ]
                        assert len(stdio) == 3
                        os.write(stdio[1], b"hi\n")
                        for fd in stdio:
                            os.close(fd)
                        await server.send(Error("just so"))
                        await server.send(Exit(-3))
        assert replies == [(lean.ERROR, b"just so"), (lean.EXIT, struct.pack("<i", -3))]
        assert lean.exit_status(replies[1][1]) == -3
        assert os.read(r, 10) == b"hi\n"
    finally:
        os.close(r)
        os.close(w)


async def _serve_raw(sock_dir, payload: bytes, client):
    """Accept one connection, send `payload` raw, close; run `client(path)` in a thread."""
    path = os.path.join(sock_dir, "s")
    async with await open_unix_listener(path) as listener:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                result = []
                nursery.start_soon(_run, result, client, path)
                async with await listener.accept() as server:
                    await server.socket.send(payload)
        return result[0]


async def _run(result, client, path):
    result.append(await trio.to_thread.run_sync(lambda: _outcome(client, path)))


def _outcome(client, path):
    try:
        return client(path)
    except ProtocolError as exc:
        return exc


def _receive_all(path):
    with BlockingUnixConnection(path) as connection:
        out = []
        while (reply := connection.receive()) is not None:
            out.append(reply)
        return out


async def test_clean_close_between_messages_is_none(sock_dir):
    assert await _serve_raw(sock_dir, lean.message(lean.EXIT, struct.pack("<i", 0)), _receive_all) == [
        (lean.EXIT, b"\0\0\0\0")
    ]


@pytest.mark.parametrize("cut", [3, 8, 10])
async def test_close_mid_message_is_a_protocol_error(sock_dir, cut):
    wire = lean.message(lean.ERROR, b"abcdef")
    outcome = await _serve_raw(sock_dir, wire[:cut], _receive_all)
    assert isinstance(outcome, ProtocolError)


@pytest.mark.parametrize("header", [struct.pack("<II", 42, 0), struct.pack("<II", 3, 2**32 - 1)])
async def test_bad_header_is_a_protocol_error(sock_dir, header):
    outcome = await _serve_raw(sock_dir, header, _receive_all)
    assert isinstance(outcome, ProtocolError)


async def test_socket_is_close_on_exec(sock_dir):
    path = os.path.join(sock_dir, "s")
    async with await open_unix_listener(path):
        with BlockingUnixConnection(path) as connection:
            assert fcntl.fcntl(connection.socket.fileno(), fcntl.F_GETFD) & fcntl.FD_CLOEXEC
        assert connection.socket.fileno() == -1


async def test_connecting_to_nothing_raises(sock_dir):
    with pytest.raises(FileNotFoundError):
        BlockingUnixConnection(os.path.join(sock_dir, "absent"))
