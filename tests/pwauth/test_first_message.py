"""Reading exactly the first message, and nothing after it."""

import array
import os
import socket

import pytest
import trio

from capsudo.proto import ProtocolError, lean
from capsudo.pwauth._first_message import read_first_message, wipe


def pair():
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    return trio.socket.from_stdlib_socket(ours), theirs


def send_fds(sock, data, fds):
    sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])


def open_fds():
    return set(os.listdir("/proc/self/fd"))


async def test_a_secret_is_read_to_its_last_byte_and_no_further():
    ours, theirs = pair()
    rest = lean.arg("id") + lean.end()
    theirs.sendall(lean.secret(b"hunter2") + rest)
    first = await read_first_message(ours, 4096)
    assert first.is_clean_secret and first.secret == bytearray(b"hunter2")
    theirs.close()
    assert await ours.recv(1000) == rest  # the rest is the chained daemon's


async def test_other_messages_are_known_by_their_header_alone():
    ours, theirs = pair()
    theirs.sendall(lean.arg("id") + lean.end())
    first = await read_first_message(ours, 4096)
    assert (first.type_code, first.length, first.secret) == (lean.ARG, 2, None)
    assert not first.is_clean_secret
    assert await ours.recv(1000) == b"id" + lean.end()


async def test_descriptors_with_a_secret_are_closed_and_reported():
    ours, theirs = pair()
    before = open_fds()
    send_fds(theirs, lean.secret(b"x" * 10), [0, 1])
    first = await read_first_message(ours, 4096)
    assert first.had_descriptors and first.secret is None and not first.is_clean_secret
    assert open_fds() == before


async def test_descriptors_that_arrive_with_the_payload_count_too():
    ours, theirs = pair()
    theirs.sendall(lean.HEADER.pack(lean.SECRET, 6) + b"abc")
    send_fds(theirs, b"def", [0])
    first = await read_first_message(ours, 4096)
    assert first.had_descriptors and first.secret is None


async def test_oversized_and_empty_secrets_are_not_read():
    ours, theirs = pair()
    theirs.sendall(lean.HEADER.pack(lean.SECRET, 5000) + b"y" * 100)
    first = await read_first_message(ours, 4096)
    assert (first.length, first.secret) == (5000, None)
    ours, theirs = pair()
    theirs.sendall(lean.secret(b""))
    first = await read_first_message(ours, 4096)
    assert (first.type_code, first.length, first.secret) == (lean.SECRET, 0, None)


@pytest.mark.parametrize(
    "data, message",
    [
        (lean.HEADER.pack(lean.SECRET, 10) + b"abc", "the connection closed in the middle of a message"),
        (b"\x07\x00\x00", "the connection closed in the middle of a message"),
        (lean.HEADER.pack(42, 1) + b"z", "unknown message type 42"),
        (lean.HEADER.pack(lean.ARG, 2**31), "Arg message announces 2147483648 bytes, more than the limit of 16777216"),
    ],
)
async def test_bad_bytes_are_a_protocol_error(data, message):
    ours, theirs = pair()
    theirs.sendall(data)
    theirs.shutdown(socket.SHUT_WR)
    with pytest.raises(ProtocolError) as caught:
        await read_first_message(ours, 4096)
    assert str(caught.value) == message


async def test_a_peer_that_closes_at_once_sent_nothing():
    ours, theirs = pair()
    theirs.close()
    assert await read_first_message(ours, 4096) is None


def test_wipe_overwrites_in_place():
    secret = bytearray(b"hunter2")
    view = memoryview(secret)
    wipe(secret)
    assert bytes(view) == bytes(7)
