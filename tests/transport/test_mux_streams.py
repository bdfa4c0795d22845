"""Logical streams of the multiplexer behave as proper trio half-closeable streams."""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing

from capsudo.proto import Direction
from capsudo.transport import MuxConnection


@pytest.fixture
async def connections():
    opened: list[MuxConnection] = []
    yield opened
    # All at once, as separate processes would: each end waits for the other's end of file.
    async with trio.open_nursery() as nursery:
        for connection in opened:
            nursery.start_soon(connection.aclose)


def _socket_links(buffer_size: int | None = None) -> tuple[trio.SocketStream, trio.SocketStream]:
    a, b = socket.socketpair()
    if buffer_size is not None:
        for sock in (a, b):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffer_size)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer_size)
    return trio.SocketStream(trio.socket.from_stdlib_socket(a)), trio.SocketStream(trio.socket.from_stdlib_socket(b))


async def _pair(opened, links, **options):
    dialing = MuxConnection(links[0], "dialing", **options)
    accepting = MuxConnection(links[1], "accepting", **options)
    opened += [dialing, accepting]
    ours = await dialing.open_stream(Direction.READ_WRITE)
    theirs = await accepting.accept_stream()
    return ours, theirs


async def _clog(stream) -> None:
    """Send until the peer's buffer, its reader's hands and the link are all full."""
    while True:
        with trio.move_on_after(0.05) as waited:
            await stream.wait_send_all_might_not_block()
        if waited.cancelled_caught:
            return
        await stream.send_all(b"x" * 1024)


async def test_half_closeable_over_memory_streams(connections):
    async def maker():
        return await _pair(connections, trio.testing.memory_stream_pair())

    await trio.testing.check_half_closeable_stream(maker, None)


async def test_half_closeable_over_lockstep_streams(connections):
    async def maker():
        return await _pair(connections, trio.testing.lockstep_stream_pair())

    await trio.testing.check_half_closeable_stream(maker, None)


async def test_half_closeable_over_sockets_with_clogging(connections):
    async def maker():
        return await _pair(connections, _socket_links())

    async def clogged_maker():
        first, second = await _pair(connections, _socket_links(4096), stream_buffer_limit=1024)
        await _clog(first)
        await _clog(second)
        return first, second

    await trio.testing.check_half_closeable_stream(maker, clogged_maker)


async def test_stream_ids_follow_the_roles(connections):
    links = trio.testing.memory_stream_pair()
    dialing = MuxConnection(links[0], "dialing")
    accepting = MuxConnection(links[1], "accepting")
    connections += [dialing, accepting]
    ours = await dialing.open_streams([Direction.READ, Direction.WRITE, Direction.WRITE])
    assert [s.stream_id for s in ours] == [0, 2, 4]
    theirs = await accepting.accept_streams()
    assert [(s.stream_id, s.direction) for s in theirs] == [
        (0, Direction.READ), (2, Direction.WRITE), (4, Direction.WRITE)
    ]
    back = await accepting.open_stream()
    assert back.stream_id == 1
    assert (await dialing.accept_stream()).stream_id == 1


async def test_directions_decide_who_may_send(connections):
    links = trio.testing.memory_stream_pair()
    dialing = MuxConnection(links[0], "dialing")
    accepting = MuxConnection(links[1], "accepting")
    connections += [dialing, accepting]
    (ours,) = await dialing.open_streams([Direction.READ])
    (theirs,) = await accepting.accept_streams()
    assert ours.can_send and not ours.can_receive
    assert theirs.can_receive and not theirs.can_send
    with pytest.raises(trio.ClosedResourceError):
        await theirs.send_all(b"not this way")
    assert await ours.receive_some() == b""
    await ours.send_all(b"this way")
    await ours.send_eof()
    assert await theirs.receive_some() == b"this way"
    assert await theirs.receive_some() == b""


async def test_receiver_closing_tells_the_sender_to_stop(connections):
    links = trio.testing.memory_stream_pair()
    dialing = MuxConnection(links[0], "dialing")
    accepting = MuxConnection(links[1], "accepting")
    connections += [dialing, accepting]
    (ours,) = await dialing.open_streams([Direction.READ])
    (theirs,) = await accepting.accept_streams()
    await ours.send_all(b"first")
    await theirs.aclose()
    with trio.fail_after(5):
        with pytest.raises(trio.BrokenResourceError):
            while True:
                await ours.send_all(b"more")
    assert ours.peer_gone
