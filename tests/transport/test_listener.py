"""open_unix_listener: modes, stale sockets, refusals, and removal on close."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys

import pytest
import trio

from capsudo.proto import Arg
from capsudo.transport import DEFAULT_MODE, EndpointError, connect_unix, open_unix_listener

pytestmark = pytest.mark.deadline(10)


def mode_of(path: str) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def can_connect(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
        return True
    except OSError:
        return False
    finally:
        probe.close()


def stale_socket(path: str) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen()
    sock.close()  # the path stays; nobody listens behind it


async def test_default_mode_is_0770(sock_dir):
    path = os.path.join(sock_dir, "s")
    assert DEFAULT_MODE == 0o770
    async with await open_unix_listener(path) as listener:
        assert listener.path == path
        assert stat.S_ISSOCK(os.lstat(path).st_mode)
        assert mode_of(path) == 0o770


@pytest.mark.parametrize("mode", [0o700, 0o660, 0o777, 0o600])
async def test_socket_gets_the_requested_mode_whatever_the_umask(sock_dir, mode):
    path = os.path.join(sock_dir, "s")
    old = os.umask(0o077)
    try:
        async with await open_unix_listener(path, mode=mode):
            assert mode_of(path) == mode
    finally:
        os.umask(old)


async def test_listener_accepts_and_carries_messages(sock_dir):
    path = os.path.join(sock_dir, "s")
    async with await open_unix_listener(path) as listener:
        async with await connect_unix(path) as client, await listener.accept() as server:
            await client.send(Arg("hi"))
            assert (await server.receive()).message == Arg("hi")


async def test_channel_options_reach_accepted_channels(sock_dir):
    path = os.path.join(sock_dir, "s")
    async with await open_unix_listener(path, max_payload=3) as listener:
        async with await connect_unix(path) as client, await listener.accept() as server:
            assert server.max_payload == 3


async def test_relative_path_is_made_absolute(sock_dir, monkeypatch):
    monkeypatch.chdir(sock_dir)
    async with await open_unix_listener("rel") as listener:
        assert listener.path == os.path.join(sock_dir, "rel")
        assert can_connect(os.path.join(sock_dir, "rel"))


async def test_socket_is_removed_on_aclose(sock_dir):
    path = os.path.join(sock_dir, "s")
    listener = await open_unix_listener(path)
    assert os.path.exists(path)
    await listener.aclose()
    assert not os.path.lexists(path)
    await listener.aclose()  # twice is harmless
    assert os.listdir(sock_dir) == []


async def test_no_staging_directory_is_left_behind(sock_dir):
    path = os.path.join(sock_dir, "s")
    async with await open_unix_listener(path):
        assert os.listdir(sock_dir) == ["s"]


async def test_stale_socket_is_replaced(sock_dir):
    path = os.path.join(sock_dir, "s")
    stale_socket(path)
    stale_inode = os.lstat(path).st_ino
    assert not can_connect(path)
    async with await open_unix_listener(path) as listener:
        assert os.lstat(path).st_ino != stale_inode
        assert listener.owns_path()
        assert can_connect(path)


async def test_regular_file_is_refused_and_left_untouched(sock_dir):
    path = os.path.join(sock_dir, "s")
    with open(path, "w") as f:
        f.write("precious")
    os.chmod(path, 0o640)
    before = os.lstat(path)
    with pytest.raises(EndpointError, match="not a socket") as excinfo:
        await open_unix_listener(path)
    assert "\n" not in str(excinfo.value)
    after = os.lstat(path)
    assert (after.st_ino, after.st_mode, after.st_size, after.st_mtime_ns) == (
        before.st_ino, before.st_mode, before.st_size, before.st_mtime_ns,
    )
    with open(path) as f:
        assert f.read() == "precious"
    assert sorted(os.listdir(sock_dir)) == ["s"]


@pytest.mark.parametrize("kind", ["directory", "symlink", "fifo"])
async def test_other_non_sockets_are_refused(sock_dir, kind):
    path = os.path.join(sock_dir, "s")
    if kind == "directory":
        os.mkdir(path)
    elif kind == "symlink":
        target = os.path.join(sock_dir, "target")
        stale_socket(target)
        os.symlink(target, path)
    else:
        os.mkfifo(path)
    before = os.lstat(path)
    with pytest.raises(EndpointError):
        await open_unix_listener(path)
    assert os.lstat(path).st_ino == before.st_ino


async def test_live_listener_is_not_replaced(sock_dir):
    path = os.path.join(sock_dir, "s")
    async with await open_unix_listener(path) as first:
        inode = os.lstat(path).st_ino
        with pytest.raises(EndpointError, match="in use"):
            await open_unix_listener(path)
        assert os.lstat(path).st_ino == inode
        assert first.owns_path()
        async with await connect_unix(path) as client:
            await client.send(Arg("still here"))
            # The refusal probed the path with a connection of its own, which
            # the first listener sees as a peer that left without a word.
            with trio.fail_after(5):
                while True:
                    async with await first.accept() as server:
                        received = await server.receive()
                    if received is not None:
                        break
            assert received.message == Arg("still here")


async def test_aclose_leaves_a_socket_that_replaced_ours(sock_dir):
    path = os.path.join(sock_dir, "s")
    first = await open_unix_listener(path)
    os.unlink(path)  # someone revokes it and sets up another endpoint there
    async with await open_unix_listener(path) as second:
        assert not first.owns_path()
        await first.aclose()
        assert os.path.lexists(path)
        assert second.owns_path()
        async with await connect_unix(path) as client, await second.accept() as server:
            await client.send(Arg("second"))
            assert (await server.receive()).message == Arg("second")
    assert not os.path.lexists(path)


async def test_aclose_after_the_path_vanished_is_fine(sock_dir):
    path = os.path.join(sock_dir, "s")
    listener = await open_unix_listener(path)
    os.unlink(path)
    await listener.aclose()
    assert not os.path.lexists(path)


async def test_missing_directory_is_an_endpoint_error(sock_dir):
    with pytest.raises(EndpointError, match="cannot create"):
        await open_unix_listener(os.path.join(sock_dir, "no", "such", "s"))


@pytest.mark.parametrize("name_length", [1, 20])
async def test_longest_usable_paths_work(sock_dir, name_length):
    # sun_path holds 108 bytes with the NUL: a 107-byte path is a valid socket
    # address, and a listener there must work although it is staged in a
    # private directory whose path is longer.
    directory = os.path.join(sock_dir, "d" * (107 - len(sock_dir) - 2 - name_length))
    os.mkdir(directory)
    path = os.path.join(directory, "s" * name_length)
    assert len(path) == 107
    async with await open_unix_listener(path, mode=0o700) as listener:
        assert mode_of(path) == 0o700
        async with await connect_unix(path) as client, await listener.accept() as server:
            await client.send(Arg("long"))
            assert (await server.receive()).message == Arg("long")
    assert os.listdir(directory) == []


async def test_path_no_client_could_reach_is_an_endpoint_error(sock_dir):
    path = os.path.join(sock_dir, "x" * (107 - len(sock_dir)))  # 108 bytes
    assert len(path) == 108
    with pytest.raises(EndpointError, match="longer"):
        await open_unix_listener(path)
    assert os.listdir(sock_dir) == []


@pytest.mark.parametrize("mode, writers", [(0o777, "every user"), (0o770, "group"), (0o702, "every user")])
async def test_directory_others_can_write_is_refused(sock_dir, mode, writers):
    # Whoever can write the directory could swap what we put there.
    os.chmod(sock_dir, mode)
    path = os.path.join(sock_dir, "s")
    with pytest.raises(EndpointError) as excinfo:
        await open_unix_listener(path)
    message = str(excinfo.value)
    assert "\n" not in message
    assert f"unsafe directory {sock_dir}: it is writable by " in message and writers in message and "not sticky" in message
    assert "--allow-unsafe-directory" in message
    assert os.listdir(sock_dir) == []


async def test_sticky_directory_others_can_write_is_fine(sock_dir):
    # As /tmp: there nobody but an entry's owner may rename or remove it.
    os.chmod(sock_dir, 0o1777)
    path = os.path.join(sock_dir, "s")
    async with await open_unix_listener(path) as listener:
        assert listener.owns_path()
        assert can_connect(path)


async def test_unsafe_directory_allowed_when_asked(sock_dir):
    os.chmod(sock_dir, 0o777)
    path = os.path.join(sock_dir, "s")
    async with await open_unix_listener(path, mode=0o700, allow_unsafe_directory=True) as listener:
        assert mode_of(path) == 0o700
        async with await connect_unix(path) as client, await listener.accept() as server:
            await client.send(Arg("insisted"))
            assert (await server.receive()).message == Arg("insisted")
    assert os.listdir(sock_dir) == []


async def test_directory_reached_through_a_symlink_works(sock_dir):
    # As /var/run -> /run: the parent is resolved once, then used by descriptor.
    os.mkdir(os.path.join(sock_dir, "real"))
    os.symlink("real", os.path.join(sock_dir, "link"))
    async with await open_unix_listener(os.path.join(sock_dir, "link", "s")) as listener:
        assert stat.S_ISSOCK(os.lstat(os.path.join(sock_dir, "real", "s")).st_mode)
        assert listener.owns_path()
    assert os.listdir(os.path.join(sock_dir, "real")) == []


# A separate process watches the path in a tight loop while listeners are set
# up there again and again, and reports every distinct (mode, uid, gid, is
# socket) it saw. The window of a chmod-after-bind race is microseconds wide,
# so one attempt would rarely catch it; many attempts almost always do.
_WATCHER = r"""
import json, os, stat, sys
path, stop = sys.argv[1], sys.argv[2]
seen = set()
hits = polls = 0
print("ready", flush=True)
while True:
    polls += 1
    if polls % 256 == 0 and os.path.exists(stop):
        break
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        continue
    hits += 1
    seen.add((stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, stat.S_ISSOCK(st.st_mode)))
print(json.dumps({"hits": hits, "seen": sorted(seen)}), flush=True)
"""

ATTEMPTS = 60


async def watch_creation(path: str, create) -> tuple[int, list[tuple[int, int, int, bool]]]:
    """Create and close a listener at `path` ATTEMPTS times under watch."""
    stop = path + ".stop"
    watcher = subprocess.Popen([sys.executable, "-c", _WATCHER, path, stop], stdout=subprocess.PIPE, text=True)
    try:
        assert watcher.stdout.readline().strip() == "ready"
        for _ in range(ATTEMPTS):
            listener = await create()
            await trio.sleep(0.0005)  # let the watcher see the finished socket too
            await listener.aclose()
        open(stop, "w").close()
        out, _ = await trio.to_thread.run_sync(lambda: watcher.communicate(timeout=20))
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
        if os.path.exists(stop):
            os.unlink(stop)
    report = json.loads(out)
    return report["hits"], [tuple(x) for x in report["seen"]]


async def test_mode_is_right_at_the_moment_the_path_appears(sock_dir):
    path = os.path.join(sock_dir, "s")
    old = os.umask(0)  # a socket bound in place would appear as 0777
    try:
        hits, seen = await watch_creation(path, lambda: open_unix_listener(path, mode=0o700))
    finally:
        os.umask(old)
    assert hits > 0, "the watcher never saw the socket"
    assert seen == [(0o700, os.geteuid(), os.getegid(), True)]
