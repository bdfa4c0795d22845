"""A link whose peer left is noticed even while the reader waits for room in a full stream.

While a stream's buffer is full the reader does not read the link, so it
cannot see the peer's end of file (it comes after the data the peer still
had to send) nor, on TCP, a reset (an orphaned socket answers only new
data). The connection probes the link with empty StreamData frames while it
waits; these tests use real links (TCP on loopback, a socket pair, pipes)
and a raw peer that fills a stream and then leaves.
"""

from __future__ import annotations

import os
import socket
import struct

import pytest
import trio

from capsudo.proto import Direction, FdsFrame, StreamClose, StreamData, encode_frame
from capsudo.transport import MuxConnection

HEADER = struct.Struct("<BII")  # kind, stream id, payload length
STREAM_DATA = 3
PROBE_INTERVAL = 0.2
LIMIT = 16 * 1024


class _RawPeer:
    """The far end of a link as plain descriptors: what it writes, what it reads, how it leaves."""

    def __init__(self, write_fd: int, read_fd: int, closers) -> None:
        self.write_fd = write_fd
        self.read_fd = read_fd
        self._closers = closers

    def send_until_full(self, frame: bytes) -> int:
        """Write whole copies of `frame` until the link takes no more; the bytes it took."""
        os.set_blocking(self.write_fd, False)
        sent, unsent = 0, frame
        while True:
            try:
                written = os.write(self.write_fd, unsent)
            except BlockingIOError:
                return sent
            sent += written
            unsent = unsent[written:] or frame

    def leave(self) -> None:
        closers, self._closers = self._closers, []
        for close in closers:
            close()


def _tcp_link():
    listener = socket.create_server(("127.0.0.1", 0))
    theirs = socket.create_connection(listener.getsockname())
    ours, _ = listener.accept()
    listener.close()
    return trio.SocketStream(trio.socket.from_stdlib_socket(ours)), _RawPeer(theirs.fileno(), theirs.fileno(), [theirs.close])


def _socketpair_link():
    ours, theirs = socket.socketpair()
    return trio.SocketStream(trio.socket.from_stdlib_socket(ours)), _RawPeer(theirs.fileno(), theirs.fileno(), [theirs.close])


def _pipe_link():
    # As ssh gives its stdio to capsudo-proxy --stdio: one pipe each way.
    to_us_r, to_us_w = os.pipe()
    from_us_r, from_us_w = os.pipe()
    link = trio.StapledStream(trio.lowlevel.FdStream(from_us_w), trio.lowlevel.FdStream(to_us_r))
    return link, _RawPeer(to_us_w, from_us_r, [lambda: os.close(to_us_w), lambda: os.close(from_us_r)])


LINKS = {"tcp": _tcp_link, "socketpair": _socketpair_link, "pipe": _pipe_link}

# The peer's session: stream 0 carries its input to us, stream 2 our output to it.
ANNOUNCE = encode_frame(FdsFrame(((0, Direction.READ), (2, Direction.WRITE))))


def _frames(data: bytes) -> list[tuple[int, int, bytes]]:
    frames = []
    while data:
        kind, stream_id, length = HEADER.unpack(data[:9])
        frames.append((kind, stream_id, data[9 : 9 + length]))
        data = data[9 + length :]
    return frames


@pytest.mark.parametrize("consumer", ["never reads", "trickles"])
@pytest.mark.parametrize("carrier", sorted(LINKS))
async def test_a_peer_that_leaves_while_its_stream_is_full_is_noticed(carrier, consumer):
    link, peer = LINKS[carrier]()
    connection = MuxConnection(link, "accepting", stream_buffer_limit=LIMIT, probe_interval=PROBE_INTERVAL)
    try:
        os.write(peer.write_fd, ANNOUNCE)
        input_stream, _ = await connection.accept_streams()
        # The input is not read (or a byte at a time): the stream fills, the reader stops, the link fills.
        assert peer.send_until_full(encode_frame(StreamData(0, b"x" * 8192))) > LIMIT
        async with trio.open_nursery() as nursery:
            if consumer == "trickles":

                async def trickle() -> None:
                    while True:
                        await input_stream.receive_some(1)  # each wakes the paused reader, none makes room
                        await trio.sleep(PROBE_INTERVAL / 4)

                nursery.start_soon(trickle)
            await trio.sleep(2 * PROBE_INTERVAL)
            assert input_stream.buffered >= LIMIT - 8192
            peer.leave()
            started = trio.current_time()
            with trio.fail_after(10):
                with pytest.raises(trio.BrokenResourceError):
                    await connection.receive()
            noticed = trio.current_time() - started
            nursery.cancel_scope.cancel()
        # Two probes (the first draws the reset, the second meets it) and the settle time.
        assert noticed < 2 * PROBE_INTERVAL + 1.0, noticed
        # What arrived before the peer left is still there to read.
        assert (await input_stream.receive_some())[:1] == b"x"
    finally:
        peer.leave()
        await connection.aclose()


async def test_the_probes_are_empty_data_on_a_stream_towards_the_peer_and_never_follow_its_close():
    ours, theirs = socket.socketpair()
    connection = MuxConnection(trio.SocketStream(trio.socket.from_stdlib_socket(ours)), "accepting",
                               stream_buffer_limit=LIMIT, probe_interval=0.05)
    try:
        theirs.sendall(ANNOUNCE)
        _, output_stream = await connection.accept_streams()
        theirs.setblocking(False)
        peer = _RawPeer(theirs.fileno(), theirs.fileno(), [])
        peer.send_until_full(encode_frame(StreamData(0, b"y" * 8192)))
        await trio.sleep(0.5)
        output_stream.send_eof_nowait()
        await trio.sleep(0.5)
        received = b""
        while True:
            try:
                received += theirs.recv(65536)
            except BlockingIOError:
                break
        frames = _frames(received)
        close_at = frames.index((4, 2, b""))
        before, after = frames[:close_at], frames[close_at + 1 :]
        # While stream 2 may carry data to the peer, the probes use it ...
        assert len(before) >= 5 and set(before) == {(STREAM_DATA, 2, b"")}, before
        # ... and after its StreamClose they use another announced stream instead.
        assert len(after) >= 5 and set(after) == {(STREAM_DATA, 0, b"")}, after
    finally:
        theirs.close()
        await connection.aclose()


async def test_a_live_peer_behind_a_full_stream_gets_everything_despite_the_probes():
    a, b = socket.socketpair()
    payload = os.urandom(600_000)
    sender = MuxConnection(trio.SocketStream(trio.socket.from_stdlib_socket(a)), "dialing", probe_interval=0.02)
    receiver = MuxConnection(trio.SocketStream(trio.socket.from_stdlib_socket(b)), "accepting",
                             stream_buffer_limit=LIMIT, probe_interval=0.02)
    try:
        outgoing, back = await sender.open_streams([Direction.READ, Direction.WRITE])
        incoming, towards_sender = await receiver.accept_streams()
        got = bytearray()
        async with trio.open_nursery() as nursery:

            async def send() -> None:
                await outgoing.send_all(payload)
                await outgoing.send_eof()

            nursery.start_soon(send)
            # A slow consumer: the reader stays paused, and probes, most of the time.
            while chunk := await incoming.receive_some(LIMIT):
                got += chunk
                await trio.sleep(0.05 if len(got) < 200_000 else 0)
        assert bytes(got) == payload
        # The probes reached the sender's side as nothing at all, and the link still works both ways.
        assert back.buffered == 0
        await towards_sender.send_all(b"still here")
        with trio.fail_after(5):
            assert await back.receive_some() == b"still here"
    finally:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender.aclose)
            nursery.start_soon(receiver.aclose)


async def test_empty_data_is_taken_on_any_announced_stream():
    ours, theirs = socket.socketpair()
    async with MuxConnection(trio.SocketStream(trio.socket.from_stdlib_socket(ours)), "dialing") as connection:
        (ours_out,) = await connection.open_streams([Direction.READ])  # we send, the peer only receives
        theirs.sendall(
            encode_frame(FdsFrame(((1, Direction.READ),)))
            + encode_frame(StreamData(ours_out.stream_id, b""))  # the wrong way, but empty
            + encode_frame(StreamData(1, b"data"))
            + encode_frame(StreamClose(1))
            + encode_frame(StreamData(1, b""))  # after its StreamClose, but empty
        )
        (incoming,) = await connection.accept_streams()
        with trio.fail_after(5):
            assert await incoming.receive_some() == b"data"
            assert await incoming.receive_some() == b""
        theirs.shutdown(socket.SHUT_WR)
        with trio.fail_after(5):
            assert await connection.receive() is None  # a clean end: nothing above was an error
        theirs.close()
