"""Memory stays bounded: a peer that does not read makes us wait, not buffer."""

from __future__ import annotations

import fcntl
import os
import socket
import struct
import termios

import trio

from capsudo.proto import DATA_FRAME_SIZE, Direction, Fd
from capsudo.transport import MuxChannel, MuxConnection

FRAME_HEADER = 9


def _unread(sock_or_fd) -> int:
    fd = sock_or_fd if isinstance(sock_or_fd, int) else sock_or_fd.fileno()
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]


def _links(buffer_size: int) -> tuple[trio.SocketStream, socket.socket]:
    ours, theirs = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffer_size)
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer_size)
    return trio.SocketStream(trio.socket.from_stdlib_socket(ours)), theirs


async def test_stdin_is_read_only_as_fast_as_the_link_takes_it():
    link, peer = _links(32 * 1024)  # the peer never reads
    stdin_ours, stdin_theirs = socket.socketpair()
    stdout_r, stdout_w = os.pipe()
    stdin_theirs.setblocking(False)
    written = 0
    try:
        async with MuxChannel(link, "dialing") as channel:
            await channel.send(Fd(3), [stdin_ours.fileno(), stdout_w, stdout_w])
            # Keep the user's input full for a while.
            with trio.move_on_after(0.5):
                while True:
                    try:
                        written += stdin_theirs.send(b"k" * 65536)
                    except BlockingIOError:
                        await trio.sleep(0.01)
            await trio.sleep(0.2)
            consumed = written - _unread(stdin_ours)
            in_link = _unread(peer)
            assert consumed > 0
            assert _unread(stdin_ours) > 0, "the input was drained although nobody reads the link"
            # Everything taken from stdin is in the link, but for at most the frame in the writer's hands.
            assert consumed <= in_link + DATA_FRAME_SIZE + FRAME_HEADER
            peer.close()
    finally:
        for thing in (stdin_ours, stdin_theirs, peer):
            thing.close()
        os.close(stdout_r)
        os.close(stdout_w)


async def test_a_stream_nobody_reads_stops_the_reader_at_its_buffer_limit():
    limit = 64 * 1024
    a, b = socket.socketpair()
    sender_link = trio.SocketStream(trio.socket.from_stdlib_socket(a))
    receiver_link = trio.SocketStream(trio.socket.from_stdlib_socket(b))
    sent = 0
    sender = MuxConnection(sender_link, "dialing")
    receiver = MuxConnection(receiver_link, "accepting", stream_buffer_limit=limit)
    try:
        outgoing = await sender.open_stream(Direction.READ)
        (incoming,) = await receiver.accept_streams()

        async def flood() -> None:
            nonlocal sent
            while True:
                await outgoing.send_all(b"z" * 16384)
                sent += 16384

        async with trio.open_nursery() as nursery:
            nursery.start_soon(flood)
            await trio.sleep(0.5)
            assert incoming.buffered <= limit
            # What left the sender is in the link, in the receiver's hands (one read),
            # or in the stream's bounded buffer; the sender itself is blocked.
            assert sent - _unread(b) <= limit + 65536 + 2 * (16384 + FRAME_HEADER)
            before = sent
            await trio.sleep(0.2)
            assert sent == before
            # Reading the stream lets everything move again.
            got = 0
            while got < 4 * limit:
                got += len(await incoming.receive_some())
            assert sent > before
            nursery.cancel_scope.cancel()
    finally:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender.aclose)
            nursery.start_soon(receiver.aclose)
