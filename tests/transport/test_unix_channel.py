"""UnixChannel over real socket pairs: messages, SCM_RIGHTS, framing, credentials."""

from __future__ import annotations

import array
import fcntl
import os
import socket
import struct

import pytest
import trio
import trio.testing

from capsudo.proto import (Arg, End, Env, Error, Exit, Fd, ProtocolError, Secret, SessionKind,
                           SessionType, Unauthorized, Winsize, encode_message)
from capsudo.transport import PeerCredentials, Received, UnixChannel, connect_unix, open_unix_listener
from capsudo.transport._unix import DEFAULT_MAX_FDS

pytestmark = pytest.mark.deadline(10)


@pytest.fixture
async def pair():
    a, b = trio.socket.socketpair()
    left, right = UnixChannel(a), UnixChannel(b)
    try:
        yield left, right
    finally:
        await left.aclose()
        await right.aclose()


@pytest.fixture
def pipes():
    """Make pipes whose ends are all closed after the test."""
    made: list[int] = []

    def make(count: int = 1) -> list[tuple[int, int]]:
        result = []
        for _ in range(count):
            r, w = os.pipe()
            made.extend((r, w))
            result.append((r, w))
        return result

    yield make
    for fd in made:
        try:
            os.close(fd)
        except OSError:
            pass


def open_fds() -> set[int]:
    return {int(name) for name in os.listdir("/proc/self/fd")}


def sees_eof(read_end: int) -> bool:
    """True when every write end of the pipe is closed; False when one is still open."""
    os.set_blocking(read_end, False)
    try:
        return os.read(read_end, 1) == b""
    except BlockingIOError:
        return False


async def raw_sendmsg(sock, data: bytes, fds=()) -> None:
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    assert await sock.sendmsg([data], ancillary) == len(data)


ALL_KINDS = [
    Arg("ls"), Arg(""), Arg("ünïcode ✓"), Env("TERM=xterm"), Exit(0), Exit(-1), Exit(255),
    SessionType(SessionKind.INTERACTIVE), Error("unable to run x: no such file"), Secret(b"\0\xff"),
    Unauthorized("[capsudo] me@host's password: "), Winsize(24, 80, 1, 2), End(),
]


async def test_messages_round_trip(pair):
    left, right = pair
    for message in ALL_KINDS:
        await left.send(message)
    for message in ALL_KINDS:
        assert await right.receive() == Received(message, [])
    # And the other way.
    await right.send(Exit(3))
    assert await left.receive() == (Exit(3), [])


async def test_large_message_round_trips_through_partial_sends(pair):
    left, right = pair
    big = Secret(os.urandom(4 * 1024 * 1024))  # far beyond the socket buffer
    got = []

    async def receive():
        got.append(await right.receive())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive)
        await left.send(big)
        await left.send(End())
    assert got == [Received(big, [])]
    assert await right.receive() == (End(), [])


async def test_fd_message_delivers_new_cloexec_descriptors_that_work(pair, pipes):
    left, right = pair
    (r0, w0), (r1, w1), (r2, w2) = pipes(3)
    sent = [w0, w1, w2]
    for fd in sent:
        os.set_inheritable(fd, True)  # so FD_CLOEXEC on arrival is the receiver's doing
    await left.send(Fd(3), sent)
    message, received = await right.receive()
    try:
        assert message == Fd(3)
        assert len(received) == 3
        assert len(set(received)) == 3
        assert not set(received) & set(sent), "received descriptors must be new ones"
        for original, copy in zip(sent, received):
            a, b = os.fstat(original), os.fstat(copy)
            assert (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino), "same pipe, in order"
            assert fcntl.fcntl(copy, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
        for (r, _), copy, text in zip([(r0, w0), (r1, w1), (r2, w2)], received, [b"in", b"out", b"err"]):
            os.write(copy, text)
            assert os.read(r, 10) == text
    finally:
        for fd in received:
            os.close(fd)


async def test_descriptors_on_a_non_fd_message_are_closed_and_the_message_arrives(pair, pipes):
    left, right = pair
    [(r, w)] = pipes(1)
    before = open_fds()
    await left.send(Arg("hello"), [w])
    assert await right.receive() == Received(Arg("hello"), [])
    assert open_fds() == before, "the stray descriptor must not stay open in the receiver"
    os.close(w)
    assert sees_eof(r), "no copy of the write end may survive"


@pytest.mark.parametrize("announced, actual", [(2, 1), (3, 2), (1, 0), (0, 1), (1, 2)])
async def test_fd_count_mismatch_is_refused_and_descriptors_closed(pair, pipes, announced, actual):
    left, right = pair
    made = pipes(actual)
    before = open_fds()
    await left.send(Fd(announced), [w for _, w in made])
    with pytest.raises(ProtocolError, match="announced"):
        await right.receive()
    assert open_fds() == before
    for r, w in made:
        os.close(w)
        assert sees_eof(r)


async def test_too_many_descriptors_is_a_protocol_error_and_leaks_nothing(pair, pipes):
    left, right = pair
    made = pipes(20)
    assert 20 > DEFAULT_MAX_FDS
    before = open_fds()
    await left.send(Fd(20), [w for _, w in made])
    with pytest.raises(ProtocolError):
        await right.receive()
    assert open_fds() == before
    for r, w in made:
        os.close(w)
        assert sees_eof(r)


async def test_extra_descriptors_are_not_silently_dropped(pair, pipes):
    # The Fd count matches what fits; the rest would vanish without a trace
    # if truncation were not refused.
    left, right = pair
    made = pipes(DEFAULT_MAX_FDS + 4)
    before = open_fds()
    await left.send(Fd(DEFAULT_MAX_FDS), [w for _, w in made])
    with pytest.raises(ProtocolError, match="more descriptors"):
        await right.receive()
    assert open_fds() == before


async def test_max_fds_is_the_boundary(pair, pipes):
    left, right = pair
    made = pipes(DEFAULT_MAX_FDS + 1)
    writers = [w for _, w in made]
    await left.send(Fd(DEFAULT_MAX_FDS), writers[:DEFAULT_MAX_FDS])
    message, received = await right.receive()
    assert message == Fd(DEFAULT_MAX_FDS)
    assert len(received) == DEFAULT_MAX_FDS
    for fd in received:
        os.close(fd)
    before = open_fds()
    await left.send(Fd(DEFAULT_MAX_FDS + 1), writers)
    with pytest.raises(ProtocolError):
        await right.receive()
    assert open_fds() == before


async def test_descriptors_lost_for_want_of_descriptors_are_not_blamed_on_the_peer(pair, pipes):
    import resource

    left, right = pair
    made = pipes(3)
    await left.send(Fd(3), [w for _, w in made])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # Room for exactly one more descriptor (the lowest free number): the other two cannot arrive.
    taken = open_fds()
    lowest_free = next(fd for fd in range(hard) if fd not in taken)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free + 1, hard))
    try:
        with pytest.raises(ProtocolError, match="this process has no descriptor left"):
            await right.receive()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_max_fds_is_a_constructor_argument(pipes):
    a, b = trio.socket.socketpair()
    async with UnixChannel(a) as left, UnixChannel(b, max_fds=2) as right:
        made = pipes(3)
        await left.send(Fd(3), [w for _, w in made])
        with pytest.raises(ProtocolError):
            await right.receive()


async def test_receiver_reads_exactly_one_message():
    with trio.fail_after(5):  # a reader that took too much would wait forever
        a, b = trio.socket.socketpair()
        async with UnixChannel(a) as left:
            right = UnixChannel(b)
            await left.send(Secret(b"pw"))
            await left.send(Arg("first"))
            await left.send(End())
            assert await right.receive() == (Secret(b"pw"), [])
            # The rest of the stream is still in the socket, untouched.
            rest = encode_message(Arg("first")) + encode_message(End())
            await left.aclose()
            got = b""
            while chunk := await right.socket.recv(4096):
                got += chunk
            assert got == rest
            await right.aclose()


async def test_receiver_leaves_descriptors_of_the_next_message_in_the_socket(pipes):
    with trio.fail_after(5):  # a reader that took too much would wait forever
        a, b = trio.socket.socketpair()
        [(r, w)] = pipes(1)
        async with UnixChannel(a) as left, UnixChannel(b) as right:
            await left.send(Secret(b"s"))
            await left.send(Fd(1), [w])
            assert await right.receive() == (Secret(b"s"), [])
            # The descriptor belongs to the second message and is still queued.
            data, ancdata, flags, _ = await right.socket.recvmsg(100, socket.CMSG_SPACE(4 * 4))
            assert data == encode_message(Fd(1))
            assert len(ancdata) == 1 and ancdata[0][:2] == (socket.SOL_SOCKET, socket.SCM_RIGHTS)
            [fd] = array.array("i", ancdata[0][2])
            try:
                assert os.fstat(fd).st_ino == os.fstat(w).st_ino
            finally:
                os.close(fd)


async def test_a_live_socket_can_be_handed_on_after_the_first_message():
    """A front-end reads one message; a successor reads the rest from the same socket."""
    with trio.fail_after(5):  # a reader that took too much would wait forever
        a, b = trio.socket.socketpair()
        async with UnixChannel(a) as client:
            front = UnixChannel(b)
            for message in (Secret(b"pw"), Env("A=1"), Arg("id"), End()):
                await client.send(message)
            assert (await front.receive()).message == Secret(b"pw")
            successor = UnixChannel(socket.socket(fileno=os.dup(front.socket.fileno())))
            await front.aclose()
            async with successor:
                assert [(await successor.receive()).message for _ in range(3)] == [Env("A=1"), Arg("id"), End()]


async def test_clean_eof_between_messages_is_none(pair):
    left, right = pair
    await left.send(Exit(0))
    await left.aclose()
    assert await right.receive() == (Exit(0), [])
    assert await right.receive() is None
    assert await right.receive() is None


async def test_eof_before_anything_is_none(pair):
    left, right = pair
    await left.aclose()
    assert await right.receive() is None


@pytest.mark.parametrize("cut", [1, 4, 7, 8, 9, 11])
async def test_eof_mid_message_is_a_protocol_error(cut):
    wire = encode_message(Arg("hello"))  # 8 + 5 bytes
    a, b = trio.socket.socketpair()
    async with UnixChannel(b) as right:
        await a.send(wire[:cut])
        a.close()
        with pytest.raises(ProtocolError, match="middle"):
            await right.receive()


async def test_eof_mid_message_closes_descriptors_that_came_with_it(pipes):
    [(r, w)] = pipes(1)
    a, b = trio.socket.socketpair()
    async with UnixChannel(b) as right:
        await raw_sendmsg(a, encode_message(Fd(1))[:6], [w])
        a.close()
        before = open_fds()  # the descriptor in flight is in nobody's table yet
        with pytest.raises(ProtocolError, match="middle"):
            await right.receive()
        assert open_fds() == before
    os.close(w)
    assert sees_eof(r)


async def test_invalid_bytes_are_a_protocol_error_and_descriptors_are_closed(pipes):
    [(r, w)] = pipes(1)
    a, b = trio.socket.socketpair()
    async with UnixChannel(b) as right:
        await raw_sendmsg(a, struct.pack("<II", 42, 0), [w])
        before = open_fds()
        with pytest.raises(ProtocolError, match="unknown message type"):
            await right.receive()
        assert open_fds() == before
        a.close()
    os.close(w)
    assert sees_eof(r)


async def test_huge_length_is_refused_without_waiting_for_the_payload():
    a, b = trio.socket.socketpair()
    async with UnixChannel(b) as right:
        await a.send(struct.pack("<II", 1, 2**32 - 1))
        with trio.fail_after(5):  # the peer never sends the payload, nor closes
            with pytest.raises(ProtocolError, match="limit"):
                await right.receive()
        a.close()


async def test_channel_payload_limit_is_a_constructor_argument():
    a, b = trio.socket.socketpair()
    async with UnixChannel(a) as left, UnixChannel(b, max_payload=4) as right:
        await left.send(Arg("abcd"))
        assert (await right.receive()).message == Arg("abcd")
        await left.send(Arg("abcde"))
        with pytest.raises(ProtocolError):
            await right.receive()


async def test_peer_credentials_are_our_own(pair):
    left, right = pair
    for channel in pair:
        assert isinstance(channel.peer, PeerCredentials)
        assert (channel.peer.pid, channel.peer.uid, channel.peer.gid) == (os.getpid(), os.getuid(), os.getgid())
        assert f"pid={os.getpid()}" in channel.description


async def test_connect_unix_and_accept_see_each_other(sock_dir):
    path = os.path.join(sock_dir, "s")
    async with await open_unix_listener(path) as listener:
        client = await connect_unix(path)
        server = await listener.accept()
        async with client, server:
            assert (server.peer.pid, server.peer.uid, server.peer.gid) == (os.getpid(), os.getuid(), os.getgid())
            assert client.peer.pid == os.getpid()
            assert path in client.description
            await client.send(Arg("x"))
            assert (await server.receive()).message == Arg("x")
            await server.send(Exit(0))
            assert (await client.receive()).message == Exit(0)


async def test_connect_unix_to_nothing_raises_and_leaks_nothing(sock_dir):
    before = open_fds()
    with pytest.raises(FileNotFoundError):
        await connect_unix(os.path.join(sock_dir, "absent"))
    assert open_fds() == before


async def test_aclose_twice_is_harmless_and_use_after_close_is_closed_resource(pair):
    left, _ = pair
    await left.aclose()
    await left.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await left.send(End())
    with pytest.raises(trio.ClosedResourceError):
        await left.receive()


async def test_aclose_wakes_a_blocked_receive_with_closed_resource(pair):
    left, _ = pair
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:

            async def close_soon():
                await trio.testing.wait_all_tasks_blocked()
                await left.aclose()

            nursery.start_soon(close_soon)
            with pytest.raises(trio.ClosedResourceError):
                await left.receive()


async def test_sending_to_a_vanished_peer_is_a_broken_link(pair):
    left, right = pair
    await right.aclose()
    with pytest.raises(trio.BrokenResourceError):
        await left.send(Exit(0))


async def test_receiving_from_a_peer_that_reset_is_a_broken_link(pair):
    left, right = pair
    await right.send(Arg("never read"))
    await left.aclose()  # closing with unread data resets the connection
    with pytest.raises(trio.BrokenResourceError):
        await right.receive()
