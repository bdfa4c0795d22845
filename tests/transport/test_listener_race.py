"""The socket's owner and mode, set while another user races to redirect them. Needs root.

An endpoint's directory that another user can write lets them rename what
is in it, the listener's staging directory included. The attack: swap the
staging directory (renameat2 RENAME_EXCHANGE) for one of their own whose
`socket` is a symlink to a file of root's, so that root's chown and chmod of
the fresh socket land on that file. The listener refuses such a directory
unless told to accept it; told so, it must still never follow the swap.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import time

import pytest

from capsudo.transport import EndpointError, Owner, open_unix_listener

pytestmark = [pytest.mark.root]

# Run as the attacker: swap every staging directory that appears in argv[1]
# for a fresh one of ours holding `socket` -> argv[2], until argv[3] (a time).
_ATTACKER = r"""
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD, RENAME_EXCHANGE = -100, 2
directory, target, deadline = sys.argv[1], sys.argv[2], float(sys.argv[3])
count = swaps = 0

def decoy():
    global count
    count += 1
    path = os.path.join(directory, f"decoy-{count}")
    os.mkdir(path)
    os.symlink(target, os.path.join(path, "socket"))
    return path.encode()

ready = decoy()  # made in advance: the window is a few microseconds
print("ready", flush=True)
while time.time() < deadline:
    for name in os.listdir(directory):
        if name.startswith(".capsudo-"):
            if libc.renameat2(AT_FDCWD, os.path.join(directory, name).encode(), AT_FDCWD, ready, RENAME_EXCHANGE) == 0:
                swaps += 1
                ready = decoy()
print("swaps", swaps, flush=True)
"""


@pytest.fixture
def attacker_dir(sock_dir, scratch_user):
    """A directory the scratch user owns and can write, inside one only root can write."""
    _, uid, gid = scratch_user
    os.chmod(sock_dir, 0o755)
    directory = os.path.join(sock_dir, "theirs")
    os.mkdir(directory, 0o755)
    os.chown(directory, uid, gid)
    return directory


def _as_user(scratch_user) -> list[str]:
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv not installed")
    _, uid, gid = scratch_user
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "/usr/bin/python3", "-I", "-c"]


async def test_a_directory_another_user_can_write_is_refused_with_one_line(attacker_dir):
    with pytest.raises(EndpointError) as refused:
        await open_unix_listener(os.path.join(attacker_dir, "sock"))
    text = str(refused.value)
    assert "\n" not in text
    assert f"{attacker_dir} belongs to uid" in text and "--allow-unsafe-directory" in text
    assert os.listdir(attacker_dir) == []


async def test_a_world_writable_directory_without_the_sticky_bit_is_refused(sock_dir):
    open_to_all = os.path.join(sock_dir, "open")
    os.mkdir(open_to_all)
    os.chmod(open_to_all, 0o777)
    with pytest.raises(EndpointError, match="writable by other users and not sticky"):
        await open_unix_listener(os.path.join(open_to_all, "sock"))
    os.chmod(open_to_all, 0o1777)  # sticky, as /tmp: others cannot rename what is ours
    async with await open_unix_listener(os.path.join(open_to_all, "sock")):
        pass


async def test_the_capsudod_command_refuses_it_in_one_line(attacker_dir):
    result = subprocess.run([sys.executable, "-m", "capsudo.daemon", "-S", os.path.join(attacker_dir, "sock")],
                            capture_output=True, text=True, timeout=20)
    assert result.returncode != 0
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("capsudod: ") and "Traceback" not in result.stderr
    assert "belongs to uid" in lines[0]


@pytest.mark.slow
async def test_swapping_the_staging_directory_never_redirects_chown_or_chmod(attacker_dir, scratch_user, sock_dir):
    _, uid, gid = scratch_user
    target = os.path.join(sock_dir, "roots-file")
    with open(target, "w") as f:
        f.write("root's\n")
    os.chmod(target, 0o600)
    before = os.stat(target)
    attacker = subprocess.Popen(
        [*_as_user(scratch_user), _ATTACKER, attacker_dir, target, str(time.time() + 20)],
        stdout=subprocess.PIPE, text=True,
    )
    failures: dict[str, int] = {}
    try:
        assert attacker.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 15
        starts = 0
        while time.monotonic() < deadline and (starts % 100 or len(_swapped(attacker_dir)) < 3):
            starts += 1
            try:
                listener = await open_unix_listener(os.path.join(attacker_dir, f"s{starts}"), owner=Owner(uid, gid),
                                                    mode=0o666, allow_unsafe_directory=True)
            except EndpointError as exc:
                key = str(exc).split(": ", 1)[-1][:60]
                failures[key] = failures.get(key, 0) + 1
            else:
                await listener.aclose()
            after = os.stat(target)
            assert (after.st_uid, after.st_gid, stat.S_IMODE(after.st_mode)) == (
                before.st_uid, before.st_gid, 0o600), f"start {starts} changed root's file"
    finally:
        attacker.terminate()
        attacker.wait()
    # Any exception other than EndpointError would have ended the loop above.
    assert starts >= 100
    # The attack did happen: each staging directory swapped for a decoy left
    # that decoy (not empty, so never removed) under the staging name.
    assert _swapped(attacker_dir), "the attacker never managed a swap: the test proved nothing"


def _swapped(attacker_dir: str) -> list[str]:
    """Staging names the attacker's decoys took over."""
    return [name for name in os.listdir(attacker_dir) if name.startswith(".capsudo-")]
