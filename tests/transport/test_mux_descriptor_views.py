"""Private views of the caller's descriptors: never a shared flag changed, never a byte dropped."""

from __future__ import annotations

import fcntl
import os
import socket
import tty

import pytest
import trio

from capsudo.transport import open_view


@pytest.fixture
def closing():
    fds: list[int] = []
    yield fds.append
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _pipe(closing) -> tuple[int, int]:
    r, w = os.pipe()
    closing(r)
    closing(w)
    return r, w


async def test_a_pipe_someone_lent_us_is_never_reopened_by_name(closing):
    # A proxy relays a client's descriptors: opening one again through /proc
    # would be an open() with the proxy's privilege, not the client's.
    r, w = _pipe(closing)
    writer = open_view(w, write=True)
    reader = open_view(r, read=True)
    try:
        assert writer.kind == reader.kind == "thread"
        assert os.get_blocking(w) and os.get_blocking(r)
        await writer.write_all(b"through a thread")
        assert await reader.read(100) == b"through a thread"
    finally:
        writer.close()
        reader.close()


async def test_a_pipe_of_our_own_is_reopened_and_its_shared_flags_stay_as_they_were(closing):
    r, w = _pipe(closing)
    writer = open_view(w, write=True, own_descriptors=True)
    reader = open_view(r, read=True, own_descriptors=True)
    try:
        assert writer.kind == reader.kind == "reopened"
        assert writer.fd != w and reader.fd != r
        # Our descriptions are non-blocking; the caller's are untouched.
        assert not os.get_blocking(writer.fd) and not os.get_blocking(reader.fd)
        assert os.get_blocking(w) and os.get_blocking(r)
        assert reader.read_nowait(10) is None
        await writer.write_all(b"through the pipe")
        assert reader.read_nowait(100) == b"through the pipe"
    finally:
        writer.close()
        reader.close()
    os.write(w, b"still mine")  # the caller's descriptors are still open
    assert os.read(r, 100) == b"still mine"


async def test_a_socket_is_used_with_per_call_flags(closing):
    a, b = socket.socketpair()
    try:
        view = open_view(a.fileno(), read=True, write=True)
        try:
            assert view.kind == "socket"
            assert view.read_nowait(10) is None
            await view.write_all(b"ping")
            assert b.recv(10) == b"ping"
            b.send(b"pong")
            await view.wait_readable()
            assert view.read_nowait(10) == b"pong"
            assert a.getblocking() and os.get_blocking(a.fileno())
        finally:
            view.close()
        a.send(b"after")  # the caller's socket is still open
        assert b.recv(10) == b"after"
    finally:
        a.close()
        b.close()


def test_files_and_memory_devices_need_no_waiting(tmp_path, closing):
    path = tmp_path / "file"
    path.write_bytes(b"contents")
    fd = os.open(path, os.O_RDONLY)
    closing(fd)
    view = open_view(fd, read=True)
    assert view.kind == "plain"
    assert view.read_nowait(100) == b"contents"
    assert view.read_nowait(100) == b""
    view.close()
    null = os.open(os.devnull, os.O_RDWR)
    closing(null)
    view = open_view(null, write=True)
    assert view.kind == "plain"
    view.close()


def test_a_terminal_view_for_output_cannot_read(closing):
    master, slave = os.openpty()
    closing(master)
    closing(slave)
    view = open_view(slave, write=True, own_descriptors=True)
    try:
        assert view.kind == "reopened"
        assert fcntl.fcntl(view.fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_WRONLY
        assert os.get_blocking(slave)
    finally:
        view.close()


def test_no_more_access_than_the_caller_has(closing):
    r, _ = _pipe(closing)
    view = open_view(r, write=True, own_descriptors=True)  # a read end asked for writing is not reopened for writing
    try:
        assert view.kind == "thread"
        assert fcntl.fcntl(view.fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY
    finally:
        view.close()


async def test_an_already_nonblocking_descriptor_gets_every_byte(closing):
    # A pty master is never reopened (that would allocate a new pty), so it
    # goes through a thread; the caller made it non-blocking, and its buffer
    # is small: EAGAIN must mean "wait", never "drop".
    master, slave = os.openpty()
    closing(master)
    closing(slave)
    tty.setraw(slave)
    os.set_blocking(master, False)
    view = open_view(master, write=True)
    assert view.kind == "thread"
    payload = os.urandom(1024 * 1024)
    received = bytearray()

    async def late_reader() -> None:
        await trio.sleep(0.3)
        while len(received) < len(payload):
            received.extend(await trio.to_thread.run_sync(os.read, slave, 65536))

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(late_reader)
            with trio.fail_after(20):
                await view.write_all(payload)
    finally:
        view.close()
    assert bytes(received) == payload
    assert not os.get_blocking(master)
