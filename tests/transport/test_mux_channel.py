"""Sessions over the multiplexed channel: descriptors, their bytes, and the order of the outcome."""

from __future__ import annotations

import fcntl
import os
import select
import socket
import struct
import termios
from contextlib import asynccontextmanager

import pytest
import trio

from capsudo.proto import (
    Arg,
    ControlFrame,
    Direction,
    End,
    Exit,
    Fd,
    FdsFrame,
    FrameDecoder,
    StreamClose,
    StreamData,
    encode_frame,
)
from capsudo.transport import MuxChannel


def _socket_links() -> tuple[trio.SocketStream, trio.SocketStream]:
    a, b = socket.socketpair()
    return trio.SocketStream(trio.socket.from_stdlib_socket(a)), trio.SocketStream(trio.socket.from_stdlib_socket(b))


@asynccontextmanager
async def _against_raw_peer(role, **options):
    """A channel whose peer is a bare socket the test writes frames into and reads frames from."""
    link, raw = _socket_links()
    channel = MuxChannel(link, role, **options)
    try:
        yield channel, raw
    finally:
        await raw.aclose()
        await channel.aclose()


@pytest.fixture
async def channels():
    """A client (dialing) and a daemon (accepting) channel over a real socket pair."""
    opened: list[MuxChannel] = []

    def make(**options) -> tuple[MuxChannel, MuxChannel]:
        client_link, daemon_link = _socket_links()
        pair = (MuxChannel(client_link, "dialing", **options), MuxChannel(daemon_link, "accepting", **options))
        opened.extend(pair)
        return pair

    yield make
    # Both ends close at once, as two processes would: each waits for the other's end of file.
    async with trio.open_nursery() as nursery:
        for channel in opened:
            nursery.start_soon(channel.aclose)


@pytest.fixture
def pipes():
    """os.pipe() pairs, all closed at the end."""
    made: list[int] = []

    def make() -> tuple[int, int]:
        r, w = os.pipe()
        made.extend((r, w))
        return r, w

    yield make
    for fd in made:
        try:
            os.close(fd)
        except OSError:
            pass


def _stream_of(fd: int) -> trio.SocketStream:
    """A received descriptor (a socket) as the daemon's program would use it."""
    return trio.SocketStream(trio.socket.from_stdlib_socket(socket.socket(fileno=fd)))


async def _read_all(stream: trio.abc.ReceiveStream) -> bytes:
    data = bytearray()
    while chunk := await stream.receive_some(65536):
        data += chunk
    return bytes(data)


def _unread(fd: int) -> int:
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]


def _drain_nowait(fd: int) -> bytes:
    data = bytearray()
    while select.select([fd], [], [], 0)[0]:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    return bytes(data)


async def test_a_session_passes_its_descriptors_and_bytes(channels, pipes):
    client, daemon = channels()
    stdin_r, stdin_w = pipes()
    stdout_r, stdout_w = pipes()
    stderr_r, stderr_w = pipes()

    async def run_daemon() -> None:
        assert (await daemon.receive()).message == Arg("cat")
        received = await daemon.receive()
        assert received.message == Fd(3) and len(received.fds) == 3
        assert (await daemon.receive()).message == End()
        stdin, stdout, stderr = (_stream_of(fd) for fd in received.fds)
        # What the user typed arrives, then the end of their input.
        assert await _read_all(stdin) == b"typed by the user"
        await stdout.send_all(b"to stdout")
        await stderr.send_all(b"to stderr")
        for stream in (stdin, stdout, stderr):
            await stream.aclose()
        await daemon.send(Exit(7))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_daemon)
        await client.send(Arg("cat"))
        await client.send(Fd(3), [stdin_r, stdout_w, stderr_w])
        await client.send(End())
        os.write(stdin_w, b"typed by the user")
        os.close(stdin_w)
        with trio.fail_after(10):
            outcome = await client.receive()
    assert outcome.message == Exit(7)
    # The output is in the client's real pipes by the time the Exit is returned.
    assert _drain_nowait(stdout_r) == b"to stdout"
    assert _drain_nowait(stderr_r) == b"to stderr"
    # The caller's descriptors are still open and still blocking.
    assert os.get_blocking(stdout_w) and os.get_blocking(stderr_w)
    os.fstat(stdin_r)


async def test_large_output_into_a_slow_nonblocking_pipe_arrives_whole_before_exit(channels, pipes):
    client, daemon = channels()
    stdin_r, stdin_w = pipes()
    os.close(stdin_w)
    stdout_r, stdout_w = pipes()
    stderr_r, stderr_w = pipes()
    os.set_blocking(stdout_w, False)  # the caller's pipe is non-blocking already
    os.set_blocking(stdout_r, False)
    size = 4 * 1024 * 1024
    payload = bytes(range(256)) * (size // 256)
    collected = bytearray()
    exit_seen_with = []

    async def run_daemon() -> None:
        received = await daemon.receive()
        stdin, stdout, stderr = (_stream_of(fd) for fd in received.fds)
        await stdout.send_all(payload)
        for stream in (stdin, stdout, stderr):
            await stream.aclose()
        await daemon.send(Exit(0))

    async def late_reader(done: trio.Event) -> None:
        await trio.sleep(0.5)
        while not done.is_set() or _unread(stdout_r):
            try:
                chunk = os.read(stdout_r, 65536)
            except BlockingIOError:
                with trio.move_on_after(0.05):
                    await trio.lowlevel.wait_readable(stdout_r)
                continue
            collected.extend(chunk)

    done = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_daemon)
        nursery.start_soon(late_reader, done)
        await client.send(Fd(3), [stdin_r, stdout_w, stderr_w])
        with trio.fail_after(30):
            outcome = await client.receive()
        exit_seen_with.append(len(collected) + _unread(stdout_r))
        done.set()
    assert outcome.message == Exit(0)
    assert exit_seen_with == [size]
    assert bytes(collected) == payload
    assert not os.get_blocking(stdout_w)  # left as the caller set it


async def _raw_frames(link: trio.abc.ReceiveStream, decoder: FrameDecoder, count: int) -> list:
    frames = []
    while len(frames) < count:
        frame = decoder.next_frame()
        if frame is None:
            decoder.feed(await link.receive_some(65536))
        else:
            frames.append(frame)
    return frames


async def test_client_sends_fds_frame_and_never_an_fd_message(pipes):
    async with _against_raw_peer("dialing") as (client, raw):
        stdin_r, _ = pipes()
        _, stdout_w = pipes()
        _, stderr_w = pipes()
        await client.send(Fd(3), [stdin_r, stdout_w, stderr_w])
        await client.send(End())
        frames = await _raw_frames(raw, FrameDecoder(), 2)
    assert frames == [
        FdsFrame(((0, Direction.READ), (2, Direction.WRITE), (4, Direction.WRITE))),
        ControlFrame(End()),
    ]


async def test_exit_that_overtakes_output_still_waits_for_it(pipes):
    async with _against_raw_peer("dialing", exit_grace=5.0) as (client, raw):
        stdin_r, _ = pipes()
        stdout_r, stdout_w = pipes()
        stderr_r, stderr_w = pipes()
        await client.send(Fd(3), [stdin_r, stdout_w, stderr_w])
        await _raw_frames(raw, FrameDecoder(), 1)

        async def misbehaving_daemon() -> None:
            await raw.send_all(encode_frame(ControlFrame(Exit(3))))
            await trio.sleep(0.3)
            await raw.send_all(encode_frame(StreamData(2, b"output after the exit")))
            await trio.sleep(0.3)
            await raw.send_all(encode_frame(StreamData(4, b"and errors")))
            await raw.send_all(encode_frame(StreamClose(2)) + encode_frame(StreamClose(4)))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(misbehaving_daemon)
            start = trio.current_time()
            with trio.fail_after(10):
                outcome = await client.receive()
            elapsed = trio.current_time() - start
        assert outcome.message == Exit(3)
        assert elapsed >= 0.5
        assert _drain_nowait(stdout_r) == b"output after the exit"
        assert _drain_nowait(stderr_r) == b"and errors"


async def test_exit_is_delivered_after_the_grace_when_output_never_closes(pipes):
    async with _against_raw_peer("dialing", exit_grace=0.3) as (client, raw):
        stdin_r, _ = pipes()
        stdout_r, stdout_w = pipes()
        _, stderr_w = pipes()
        await client.send(Fd(3), [stdin_r, stdout_w, stderr_w])
        await _raw_frames(raw, FrameDecoder(), 1)
        await raw.send_all(encode_frame(StreamData(2, b"partial")) + encode_frame(ControlFrame(Exit(0))))
        start = trio.current_time()
        with trio.fail_after(10):
            outcome = await client.receive()
        elapsed = trio.current_time() - start
        assert outcome.message == Exit(0)
        assert 0.25 <= elapsed < 2.0
        assert _drain_nowait(stdout_r) == b"partial"


async def test_daemon_sends_exit_only_after_output_streams_close(pipes):
    async with _against_raw_peer("accepting") as (daemon, raw):
        fds_frame = FdsFrame(((0, Direction.READ), (2, Direction.WRITE), (4, Direction.WRITE)))
        await raw.send_all(encode_frame(fds_frame) + encode_frame(ControlFrame(End())))
        received = await daemon.receive()
        assert received.message == Fd(3)
        assert (await daemon.receive()).message == End()
        stdin, stdout, stderr = (_stream_of(fd) for fd in received.fds)

        async def program() -> None:
            await trio.sleep(0.2)  # the program is still writing when the daemon asks to exit
            await stdout.send_all(b"last words")
            await stdout.aclose()
            await stderr.aclose()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(program)
            with trio.fail_after(10):
                await daemon.send(Exit(5))
        decoder = FrameDecoder()
        frames = await _raw_frames(raw, decoder, 4)
        await stdin.aclose()
    assert frames[-1] == ControlFrame(Exit(5))
    assert set(frames[:-1]) == {StreamData(2, b"last words"), StreamClose(2), StreamClose(4)}
    assert frames.index(StreamData(2, b"last words")) < frames.index(StreamClose(2))


async def test_daemon_exit_does_not_hang_on_output_held_open_by_a_stray_process():
    async with _against_raw_peer("accepting", exit_grace=0.3) as (daemon, raw):
        await raw.send_all(encode_frame(FdsFrame(((0, Direction.READ), (2, Direction.WRITE), (4, Direction.WRITE)))))
        received = await daemon.receive()
        held = received.fds[1]  # a background grandchild keeps stdout open
        os.close(received.fds[0])
        os.close(received.fds[2])
        with trio.fail_after(10):
            await daemon.send(Exit(0))
        frames = await _raw_frames(raw, FrameDecoder(), 3)
        assert frames[-1] == ControlFrame(Exit(0))
        assert set(frames[:-1]) == {StreamClose(2), StreamClose(4)}
        # Later writes by the stray process fail instead of vanishing unseen.
        with pytest.raises(BrokenPipeError):
            os.write(held, b"too late")
        os.close(held)


async def test_output_reader_going_away_stops_the_program_writing(channels, pipes):
    client, daemon = channels()
    stdin_r, stdin_w = pipes()
    stdout_r, stdout_w = pipes()
    _, stderr_w = pipes()
    await client.send(Fd(3), [stdin_r, stdout_w, stderr_w])
    received = await daemon.receive()
    stdout = socket.socket(fileno=received.fds[1])
    stdout.setblocking(False)
    os.close(stdout_r)  # like `capsudo -- yes | head -1`: head is gone
    with trio.fail_after(10):
        with pytest.raises(BrokenPipeError):
            while True:
                try:
                    stdout.send(b"y\n" * 4096)
                except BlockingIOError:
                    await trio.sleep(0.01)
    stdout.close()
    os.close(received.fds[0])
    os.close(received.fds[2])


async def test_stdin_is_not_read_after_the_session_ends(channels, pipes):
    client, daemon = channels()
    stdin_r, stdin_w = pipes()
    _, stdout_w = pipes()
    _, stderr_w = pipes()
    await client.send(Fd(3), [stdin_r, stdout_w, stderr_w])
    received = await daemon.receive()
    for fd in received.fds:
        os.close(fd)
    await daemon.send(Exit(0))
    assert (await client.receive()).message == Exit(0)
    os.write(stdin_w, b"typed after the end")
    await trio.sleep(0.2)
    assert _drain_nowait(stdin_r) == b"typed after the end"


async def test_a_terminal_given_as_stdout_is_never_read(channels, pipes):
    client, daemon = channels()
    master, slave = os.openpty()
    try:
        stdin_r, stdin_w = pipes()
        os.close(stdin_w)
        # The user types while the program runs; the terminal is O_RDWR.
        os.write(master, b"keystroke\n")
        await client.send(Fd(3), [stdin_r, slave, slave])
        received = await daemon.receive()
        stdin, stdout, stderr = (_stream_of(fd) for fd in received.fds)
        await stdout.send_all(b"shown")
        for stream in (stdin, stdout, stderr):
            await stream.aclose()
        await daemon.send(Exit(0))
        assert (await client.receive()).message == Exit(0)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.aclose)
            nursery.start_soon(daemon.aclose)
        shown = b""
        while b"shown" not in shown and select.select([master], [], [], 1)[0]:
            shown += os.read(master, 100)
        assert b"shown" in shown
        # The keystroke is still waiting for whoever reads the terminal next.
        assert select.select([slave], [], [], 1)[0]
        assert os.read(slave, 100) == b"keystroke\n"
        assert os.get_blocking(slave)
    finally:
        os.close(master)
        os.close(slave)


async def test_control_messages_flow_both_ways_alongside_streams(channels, pipes):
    client, daemon = channels()
    stdin_r, stdin_w = pipes()
    _, stdout_w = pipes()
    _, stderr_w = pipes()
    await client.send(Arg("one"))
    await client.send(Fd(3), [stdin_r, stdout_w, stderr_w])
    await client.send(Arg("two"))
    assert (await daemon.receive()).message == Arg("one")
    received = await daemon.receive()
    assert (await daemon.receive()).message == Arg("two")
    for fd in received.fds:
        os.close(fd)
    with pytest.raises(ValueError):
        await client.send(Fd(2), [stdin_r])
    with pytest.raises(ValueError):
        await client.send(Arg("x"), [stdin_r])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.aclose)
        assert await daemon.receive() is None
        await daemon.aclose()
