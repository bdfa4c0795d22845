"""Socket ownership and what it lets other users do. Needs root."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys

import pytest

from capsudo.transport import EndpointError, Owner, open_unix_listener, parse_owner
from test_listener import watch_creation

pytestmark = [pytest.mark.root, pytest.mark.deadline(10)]

# Run as the scratch user: connect to argv[1], report what happened.
_CONNECT = r"""
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect(sys.argv[1])
except PermissionError:
    print("EACCES", os.getuid(), os.getgid(), sorted(os.getgroups()))
    sys.exit(13)
print("connected", os.getuid(), os.getgid(), sorted(os.getgroups()))
"""


@pytest.fixture(scope="module")
def as_user(scratch_user):
    """A function that runs the connect probe as the scratch user, with given groups."""
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv not installed")
    _, uid, gid = scratch_user

    def command(python: str, groups: list[int] | None) -> list[str]:
        group_option = ["--clear-groups"] if not groups else [f"--groups={','.join(map(str, groups))}"]
        return ["setpriv", f"--reuid={uid}", f"--regid={gid}", *group_option, python]

    # The test interpreter may live where the scratch user cannot go (/root).
    for python in (sys.executable, "/usr/bin/python3", shutil.which("python3") or ""):
        if python and subprocess.run([*command(python, None), "-c", "pass"], capture_output=True).returncode == 0:
            break
    else:
        pytest.skip("no Python interpreter the scratch user can run")

    def connect(path: str, groups: list[int] | None = None) -> tuple[int, str]:
        result = subprocess.run(
            [*command(python, groups), "-I", "-c", _CONNECT, path], capture_output=True, text=True, timeout=20
        )
        return result.returncode, result.stdout.strip()

    return connect


@pytest.fixture
def open_dir(sock_dir):
    """sock_dir, traversable by everyone, so only the socket's own mode decides."""
    os.chmod(sock_dir, 0o755)
    return sock_dir


async def test_owner_and_mode_are_applied(sock_dir, scratch_user):
    name, uid, gid = scratch_user
    path = os.path.join(sock_dir, "s")
    async with await open_unix_listener(path, owner=parse_owner(name), mode=0o660):
        st = os.lstat(path)
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (uid, gid, 0o660)


async def test_numeric_owner_and_group_only(sock_dir, scratch_user):
    _, uid, gid = scratch_user
    path = os.path.join(sock_dir, "s")
    async with await open_unix_listener(path, owner=parse_owner(f"{uid}:{gid}")):
        st = os.lstat(path)
        assert (st.st_uid, st.st_gid) == (uid, gid)
    async with await open_unix_listener(path, owner=parse_owner(f":{gid}")):
        st = os.lstat(path)
        assert (st.st_uid, st.st_gid) == (os.geteuid(), gid)


async def test_owner_and_mode_are_right_at_the_moment_the_path_appears(sock_dir, scratch_user):
    _, uid, gid = scratch_user
    path = os.path.join(sock_dir, "s")
    old = os.umask(0)
    try:
        hits, seen = await watch_creation(path, lambda: open_unix_listener(path, owner=Owner(uid, gid), mode=0o700))
    finally:
        os.umask(old)
    assert hits > 0, "the watcher never saw the socket"
    assert seen == [(0o700, uid, gid, True)]


async def test_stranger_cannot_connect_to_a_root_only_socket(open_dir, as_user):
    path = os.path.join(open_dir, "s")
    async with await open_unix_listener(path, owner=Owner(0, 0)):
        assert stat.S_IMODE(os.lstat(path).st_mode) == 0o770
        code, out = as_user(path)
        assert (code, out.split()[0]) == (13, "EACCES"), out


async def test_user_in_the_sockets_group_can_connect(open_dir, as_user, scratch_user):
    _, uid, gid = scratch_user
    path = os.path.join(open_dir, "s")
    # Through the socket's group being the user's primary group...
    async with await open_unix_listener(path, owner=Owner(0, gid)) as listener:
        code, out = as_user(path)
        assert (code, out.split()[:3]) == (0, ["connected", str(uid), str(gid)]), out
        async with await listener.accept() as server:
            assert (server.peer.uid, server.peer.gid) == (uid, gid)
    # ...or through a supplementary group.
    async with await open_unix_listener(path, owner=Owner(0, 0)):
        code, out = as_user(path, groups=[0])
        assert code == 0, out
        code, out = as_user(path)
        assert code == 13, out


async def test_mode_decides_not_just_the_owner(open_dir, as_user, scratch_user):
    _, _, gid = scratch_user
    path = os.path.join(open_dir, "s")
    async with await open_unix_listener(path, owner=Owner(0, gid), mode=0o700):
        code, out = as_user(path)
        assert code == 13, out
    async with await open_unix_listener(path, owner=Owner(0, 0), mode=0o777):
        code, out = as_user(path)
        assert code == 0, out



async def test_directory_another_user_owns_is_refused(open_dir, scratch_user):
    # Its owner can make it writable at any time: its mode bits promise nothing.
    name, uid, gid = scratch_user
    theirs = os.path.join(open_dir, "theirs")
    os.mkdir(theirs, 0o755)
    os.chown(theirs, uid, gid)
    with pytest.raises(EndpointError) as excinfo:
        await open_unix_listener(os.path.join(theirs, "s"))
    message = str(excinfo.value)
    assert f"unsafe directory {theirs}: it belongs to user {name} (uid {uid})" in message, message
    assert "\n" not in message
    assert os.listdir(theirs) == []
    async with await open_unix_listener(os.path.join(theirs, "s"), allow_unsafe_directory=True) as listener:
        assert listener.owns_path()
    assert os.listdir(theirs) == []

