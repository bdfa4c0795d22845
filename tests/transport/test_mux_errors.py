"""Bytes that break the multiplexer's contract raise ProtocolError; none is silently dropped."""

from __future__ import annotations

import random
import socket
import struct

import pytest
import trio
import trio.testing

from capsudo.proto import Arg, ControlFrame, Direction, Exit, Fd, FdsFrame, ProtocolError, StreamClose, StreamData, encode_frame, encode_message
from capsudo.transport import MuxChannel, MuxConnection

HEADER = struct.Struct("<BII")


def _socket_links() -> tuple[trio.SocketStream, trio.SocketStream]:
    a, b = socket.socketpair()
    return trio.SocketStream(trio.socket.from_stdlib_socket(a)), trio.SocketStream(trio.socket.from_stdlib_socket(b))


async def _receive_after(raw_bytes: bytes, *, close: bool = False, **options):
    """What the channel's receive() makes of a peer that sends `raw_bytes` after a good Arg."""
    link, raw = trio.testing.memory_stream_pair()
    channel = MuxChannel(link, "dialing", **options)
    try:
        await raw.send_all(encode_frame(ControlFrame(Arg("before"))) + raw_bytes)
        if close:
            await raw.send_eof()
        with trio.fail_after(5):
            first = await channel.receive()
            assert first.message == Arg("before")  # what came before the bad bytes is delivered
            return await channel.receive()
    finally:
        await raw.aclose()
        await channel.aclose()


async def test_random_bytes_raise_protocol_error():
    for seed in range(20):
        noise = random.Random(seed).randbytes(4096)
        with pytest.raises(ProtocolError):
            await _receive_after(noise, close=True)


async def test_a_header_announcing_4_gib_is_refused_before_any_payload():
    # No payload follows and the link stays open: the length alone is refused.
    with pytest.raises(ProtocolError, match="limit"):
        await _receive_after(HEADER.pack(3, 1, 0xFFFFFFFF))


async def test_the_frame_limit_is_a_constructor_argument():
    frame = encode_frame(ControlFrame(Arg("x" * 2000)))
    with pytest.raises(ProtocolError, match="limit"):
        await _receive_after(frame, max_frame_payload=1024)


async def test_data_for_a_stream_never_announced():
    with pytest.raises(ProtocolError, match="never announced"):
        await _receive_after(encode_frame(StreamData(1, b"who?")))


async def test_stream_close_for_an_unknown_stream():
    with pytest.raises(ProtocolError, match="never announced"):
        await _receive_after(encode_frame(StreamClose(7)))


async def test_fds_frame_with_direction_7():
    with pytest.raises(ProtocolError, match="direction"):
        await _receive_after(HEADER.pack(2, 0, 5) + struct.pack("<IB", 1, 7))


async def test_fds_frame_with_a_stream_id_of_the_wrong_parity():
    # We dial, so the peer's streams are odd.
    with pytest.raises(ProtocolError, match="odd"):
        await _receive_after(encode_frame(FdsFrame(((2, Direction.WRITE),))))


async def test_a_stream_announced_twice():
    frame = encode_frame(FdsFrame(((1, Direction.WRITE),)))
    link, raw = trio.testing.memory_stream_pair()
    async with MuxChannel(link, "dialing") as channel:
        await raw.send_all(frame + frame)
        received = await channel.receive()
        assert received.message == Fd(1)
        with pytest.raises(ProtocolError, match="twice"):
            await channel.receive()
        for fd in received.fds:
            socket.socket(fileno=fd).close()
        await raw.aclose()


async def test_unknown_frame_kind():
    with pytest.raises(ProtocolError, match="kind"):
        await _receive_after(HEADER.pack(9, 0, 0))


async def test_unknown_control_message_type():
    body = struct.pack("<II", 77, 0)
    with pytest.raises(ProtocolError, match="unknown message type"):
        await _receive_after(HEADER.pack(1, 0, len(body)) + body)


async def test_an_fd_control_message_cannot_cross_the_multiplexer():
    body = encode_message(Fd(3))
    with pytest.raises(ProtocolError, match="Fd"):
        await _receive_after(HEADER.pack(1, 0, len(body)) + body)


async def test_the_link_closing_inside_a_frame():
    with pytest.raises(ProtocolError, match="middle of a frame"):
        await _receive_after(encode_frame(ControlFrame(Exit(0)))[:-2], close=True)


async def test_a_clean_end_between_frames_is_none():
    assert await _receive_after(b"", close=True) is None


async def test_data_after_stream_close_and_too_many_closes():
    for extra in (encode_frame(StreamData(1, b"late")), encode_frame(StreamClose(1)) * 2):
        link, raw = trio.testing.memory_stream_pair()
        async with MuxConnection(link, "dialing") as connection:
            await raw.send_all(encode_frame(FdsFrame(((1, Direction.READ),))) + encode_frame(StreamClose(1)) + extra)
            (stream,) = await connection.accept_streams()
            with pytest.raises(ProtocolError):
                await connection.receive()
            assert await stream.receive_some() == b""
            await raw.aclose()


async def test_data_on_a_stream_the_peer_may_not_write():
    link, raw = trio.testing.memory_stream_pair()
    async with MuxConnection(link, "dialing") as connection:
        (ours,) = await connection.open_streams([Direction.READ])  # we send, the peer only receives
        await raw.send_all(encode_frame(StreamData(ours.stream_id, b"backwards")))
        with pytest.raises(ProtocolError, match="carries no data from the peer"):
            await connection.receive()
        await raw.aclose()


async def test_a_broken_link_is_an_error_not_an_end_of_stream():
    link, raw = trio.testing.memory_stream_pair()
    async with MuxConnection(link, "dialing") as connection:
        await raw.send_all(encode_frame(FdsFrame(((1, Direction.READ),))) + encode_frame(StreamData(1, b"some")))
        (stream,) = await connection.accept_streams()
        await raw.aclose()  # the peer vanishes without a StreamClose
        assert await stream.receive_some() == b"some"
        with pytest.raises(trio.BrokenResourceError, match="closed before stream 1 ended"):
            await stream.receive_some()


async def test_a_link_failure_reaches_receive_as_broken_resource():
    link, raw = _socket_links()
    async with MuxChannel(link, "dialing") as channel:
        raw.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await channel.send(Arg("unread"))  # left unread, so closing resets the connection
        await trio.sleep(0.05)
        await raw.aclose()
        with pytest.raises(trio.BrokenResourceError, match="broke"):
            with trio.fail_after(5):
                await channel.receive()
