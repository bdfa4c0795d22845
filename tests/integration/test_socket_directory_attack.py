"""A Unix socket in a directory another user can write, attacked by that user.

The listener binds in a staging directory beside the final path and then
sets the socket's owner and mode. A user who can write the parent directory
can swap the staging directory for one of their own (renameat2
RENAME_EXCHANGE) whose `socket` is a symlink to a file of their choosing:
if owner and mode were applied by name, root would chown and chmod that
file. The attacker here is the scratch user, racing real listeners started
as root; and a daemon asked to listen in such a directory refuses to start
unless told otherwise. Needs root.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import trio

from capsudo.proto import Arg
from capsudo.transport import EndpointError, Owner, connect_unix, open_unix_listener

from .daemon_process import BIN, CAPSUDOD, capsudo, kill_left_running, start_daemon
from .proxy_process import CAPSUDO_PROXY, start_proxy

pytestmark = pytest.mark.root

# Run as the scratch user: watch DIRECTORY and, the moment a staging
# directory (.capsudo-*) appears, exchange it with a decoy directory of our
# own whose `socket` is a symlink to TARGET. A fresh decoy is ready before
# each watch, so the exchange is one system call away. Stops when STOP exists.
_ATTACKER = r"""
import ctypes, os, sys
directory, target, stop = sys.argv[1:4]
libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD, RENAME_EXCHANGE = -100, 2
renameat2 = libc.renameat2
renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
number = 0
def fresh_decoy():
    global number
    number += 1
    decoy = os.path.join(directory, f".decoy-{number}")
    os.mkdir(decoy)
    os.symlink(target, os.path.join(decoy, "socket"))
    return os.fsencode(decoy)
decoy = fresh_decoy()
swapped = set()  # names that now hold a decoy of ours: not worth another swap
polls = 0
print("ready", flush=True)
while True:
    polls += 1
    if polls % 1024 == 0 and os.path.exists(stop):
        break
    for entry in os.scandir(directory):
        if entry.name.startswith(".capsudo-") and entry.name not in swapped:
            staging = os.fsencode(entry.path)
            if renameat2(AT_FDCWD, staging, AT_FDCWD, decoy, RENAME_EXCHANGE) == 0:
                swapped.add(entry.name)
                decoy = fresh_decoy()
            break
print(len(swapped), flush=True)
"""

ATTEMPTS = 1500
ATTACK_SECONDS = 15


@pytest.fixture
def attacker_python(scratch_user):
    """A Python interpreter the scratch user can run, and the setpriv prefix that runs as them."""
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv not installed")
    _, uid, gid = scratch_user
    prefix = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups"]
    # The test interpreter may live where the scratch user cannot go (/root).
    for python in (sys.executable, "/usr/bin/python3", shutil.which("python3") or ""):
        if python and subprocess.run([*prefix, python, "-c", "pass"], capture_output=True).returncode == 0:
            return [*prefix, python, "-I"]
    pytest.skip("no Python interpreter the scratch user can run")


@pytest.fixture
def attacker_directory(sock_dir, scratch_user):
    """A directory the scratch user owns (0755), inside one everyone can traverse."""
    _, uid, gid = scratch_user
    os.chmod(sock_dir, 0o755)
    directory = os.path.join(sock_dir, "theirs")
    os.mkdir(directory, 0o755)
    os.chown(directory, uid, gid)
    return directory


@pytest.fixture
def daemons():
    started = []
    yield started
    kill_left_running(started)


def test_daemon_refuses_a_directory_another_user_owns_unless_told(attacker_directory, sock_dir, daemons):
    path = os.path.join(attacker_directory, "sock")
    refused = subprocess.run([CAPSUDOD, "-S", path], capture_output=True, timeout=10)
    assert refused.returncode == 1, refused.stderr
    lines = refused.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("capsudod: cannot listen on "), refused.stderr
    assert attacker_directory in lines[0] and "--allow-unsafe-directory" in lines[0], lines[0]
    assert os.listdir(attacker_directory) == []

    # The same refusal for a root-owned directory that others may write...
    shared = os.path.join(sock_dir, "shared")
    os.mkdir(shared)
    os.chmod(shared, 0o777)
    refused = subprocess.run([CAPSUDOD, "-S", os.path.join(shared, "sock")], capture_output=True, timeout=20)
    assert refused.returncode == 1 and refused.stderr.count(b"\n") == 1, refused.stderr
    assert b"writable" in refused.stderr and shared.encode() in refused.stderr, refused.stderr
    # ...but not once it is sticky, as /tmp is: there nobody can rename our entries.
    os.chmod(shared, 0o1777)
    daemons.append(sticky := start_daemon(os.path.join(shared, "sock"), log_dir=sock_dir))
    assert capsudo(sticky.socket, "true").returncode == 0

    # The operator may insist; the daemon then serves as usual.
    daemons.append(insisted := start_daemon(path, "--allow-unsafe-directory", log_dir=sock_dir))
    result = capsudo(insisted.socket, "echo", "served")
    assert (result.returncode, result.stdout) == (0, b"served\n"), result.stderr


def test_the_proxy_and_the_password_front_end_refuse_it_too(attacker_directory, sock_dir, daemons):
    path = os.path.join(attacker_directory, "sock")
    pwauth = [str(BIN / "capsudod-pwauth"), "--service", "other", "-S", path]
    for argv in ([CAPSUDO_PROXY, "-S", path, "/nonexistent"], pwauth):
        refused = subprocess.run(argv, capture_output=True, timeout=10)
        program = os.path.basename(argv[0])
        assert refused.returncode == 1, refused.stderr
        assert refused.stderr.startswith(f"{program}: cannot listen on {path}: ".encode()), refused.stderr
        assert refused.stderr.count(b"\n") == 1 and b"--allow-unsafe-directory" in refused.stderr, refused.stderr
        assert os.listdir(attacker_directory) == []

    # Told to, the proxy listens there and forwards to a daemon in a safe directory.
    daemons.append(daemon := start_daemon(os.path.join(sock_dir, "daemon.sock")))
    proxy = start_proxy(path, daemon.socket, "--allow-unsafe-directory", log_path=Path(sock_dir, "proxy.log"))
    daemons.append(proxy)
    result = capsudo(path, "echo", "through the proxy")
    assert (result.returncode, result.stdout) == (0, b"through the proxy\n"), result.stderr
    assert proxy.stop() == 0, proxy.log()
    assert not os.path.lexists(path)

    # And the password front-end (its PAM service need only exist: nobody logs in here).
    log_path = Path(sock_dir, "pwauth.log")
    with open(log_path, "wb") as log:
        front_end = subprocess.Popen([*pwauth[:-2], "--allow-unsafe-directory", *pwauth[-2:]],
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    daemons.append(SimpleNamespace(process=front_end))
    deadline = time.monotonic() + 15
    while not os.path.exists(path) and front_end.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    if front_end.poll() is not None and "cannot load PAM" in log_path.read_text():
        pytest.skip("no PAM for capsudod-pwauth")
    assert stat.S_ISSOCK(os.lstat(path).st_mode), log_path.read_text()
    front_end.terminate()
    assert front_end.wait(timeout=15) == 0, log_path.read_text()


@pytest.mark.slow
@pytest.mark.deadline(60)
async def test_a_staging_directory_swapped_by_another_user_never_redirects_chown_or_chmod(
    attacker_directory, attacker_python, scratch_user, sock_dir
):
    _, uid, gid = scratch_user
    target = os.path.join(sock_dir, "target")
    with open(target, "w") as f:
        f.write("root's own\n")
    os.chmod(target, 0o600)
    stop = os.path.join(sock_dir, "stop")
    attacker = subprocess.Popen(
        [*attacker_python, "-c", _ATTACKER, attacker_directory, target, stop], stdout=subprocess.PIPE, text=True
    )
    redirected = 0  # times the target's owner or mode changed
    refused = 0
    unexpected: list[str] = []  # anything but an EndpointError
    attempts = 0
    try:
        assert attacker.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + ATTACK_SECONDS
        while attempts < ATTEMPTS and time.monotonic() < deadline:
            attempts += 1
            try:
                listener = await open_unix_listener(
                    os.path.join(attacker_directory, f"s{attempts}"),
                    owner=Owner(uid, gid),
                    mode=0o777,
                    allow_unsafe_directory=True,
                )
                await listener.aclose()
            except EndpointError as exc:
                refused += 1
                if "\n" in str(exc):
                    unexpected.append(f"a message of several lines: {exc!r}")
            except Exception as exc:  # what the operator would have seen as a traceback
                unexpected.append(repr(exc))
            st = os.lstat(target)
            if (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) != (0, 0, 0o600):
                redirected += 1
                os.chown(target, 0, 0)
                os.chmod(target, 0o600)
        open(stop, "w").close()
        out, _ = await trio.to_thread.run_sync(lambda: attacker.communicate(timeout=20))
    finally:
        if attacker.poll() is None:
            attacker.kill()
            attacker.wait()
    swaps = int(out.strip())
    print(f"{attempts} listeners, {swaps} swaps, {refused} refused, {redirected} redirected, "
          f"{len(unexpected)} unexpected")
    assert swaps > 0, "the attacker never caught a staging directory"
    assert (redirected, unexpected) == (0, []), (
        f"root chowned or chmodded the attacker's choice {redirected} times in {attempts}; "
        f"{len(unexpected)} failures were not EndpointError: {sorted(set(unexpected))[:5]}"
    )
    with open(target) as f:
        assert f.read() == "root's own\n"

    # A listener in a safe directory serves as ever.
    safe = os.path.join(sock_dir, "safe.sock")
    async with await open_unix_listener(safe) as listener:
        assert stat.S_IMODE(os.lstat(safe).st_mode) == 0o770
        async with await connect_unix(safe) as client, await listener.accept() as server:
            await client.send(Arg("well-behaved"))
            assert (await server.receive()).message == Arg("well-behaved")
