"""Who the program runs as, what it is told about its caller, and the limits it runs under.

Endpoints served from this test (ServedEndpoint on a real Unix listener),
with the real `capsudo` command as the client, run by a user the test
creates; the program runs as another user the test creates, with a
supplementary group of its own. Limits are observed from inside the
program (its own /proc/self/limits, its cgroup) or by its being stopped.
"""

from __future__ import annotations

import grp
import os
import pwd
import secrets
import shutil
import subprocess
import termios
import time
from functools import partial

import pytest
import trio

from capsudo.core import (Ended, Hangup, Policy, PolicyError, ProgramLimits, RunAs, ServedEndpoint, SessionLimits,
                          Started, serve_session)
from capsudo.core._cgroup import find_place
from capsudo.transport import open_unix_listener

from .daemon_process import CAPSUDO

pytestmark = pytest.mark.root

MiB = 1 << 20


@pytest.fixture(scope="module")
def program_user():
    """(name, uid, gid, extra gid, home) of a user with a home and one supplementary group."""
    if os.geteuid() != 0 or shutil.which("useradd") is None or shutil.which("groupadd") is None:
        pytest.skip("needs root, useradd and groupadd")
    name, extra = f"csrun{secrets.token_hex(3)}", f"csgrp{secrets.token_hex(3)}"
    home = f"/tmp/{name}-home"
    subprocess.run(["groupadd", "--system", extra], check=True, capture_output=True)
    subprocess.run(["useradd", "--system", "--user-group", "--create-home", "--home-dir", home,
                    "--shell", "/bin/sh", "--groups", extra, name], check=True, capture_output=True)
    try:
        entry = pwd.getpwnam(name)
        yield name, entry.pw_uid, entry.pw_gid, grp.getgrnam(extra).gr_gid, home
    finally:
        subprocess.run(["userdel", "--remove", name], check=False, capture_output=True)
        subprocess.run(["groupdel", extra], check=False, capture_output=True)


async def _session(sock_dir, policy, caller, *argv, options=(), interactive=False, endpoint=None):
    """Serve `policy` on a fresh socket and run `capsudo argv` there as `caller`; (result, events)."""
    os.chmod(sock_dir, 0o755)
    path = os.path.join(sock_dir, "run.sock")
    listener = await open_unix_listener(path, mode=0o777)
    events = []
    shutdown = Hangup()

    async def handler(channel):
        return await serve_session(channel, policy, SessionLimits(hangup_grace=0.5), shutdown,
                                   events=events.append, endpoint=endpoint)

    served = ServedEndpoint(listener, handler, log=lambda line: None,
                            hang_up=partial(shutdown.hang_up_all, 0.5), grace=0.5)
    _, uid, gid = caller
    command = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", CAPSUDO, "-S", path, *options, "--", *argv]
    async with trio.open_nursery() as nursery:
        await nursery.start(served.run)
        if interactive:
            master, slave = os.openpty()
            try:
                result = await trio.run_process(command, stdin=slave, stdout=slave, capture_stderr=True,
                                                check=False)
            finally:
                os.close(slave)
            result.stdout = _drain(master)
        else:
            result = await trio.run_process(command, stdin=subprocess.DEVNULL, capture_stdout=True,
                                            capture_stderr=True, check=False)
        with trio.fail_after(5):
            while not any(isinstance(event, Ended) for event in events):
                await trio.sleep(0.01)
        served.stop()
    return result, events


def _drain(master: int) -> bytes:
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    return b"".join(chunks).replace(b"\r\n", b"\n")


REPORT = ('id -u; id -g; id -G; echo "$HOME $USER $LOGNAME $SHELL"; '
          'echo "$CAPSUDO_UID $CAPSUDO_GID $CAPSUDO_USER $CAPSUDO_ENDPOINT $CAPSUDO_SESSION"; umask; pwd')


@pytest.mark.parametrize("interactive", [False, True], ids=["plain", "pty"])
def test_the_program_runs_as_the_declared_user_and_is_told_who_asked(
        sock_dir, program_user, scratch_user, interactive):
    name, uid, gid, extra_gid, home = program_user
    caller_name, caller_uid, caller_gid = scratch_user
    policy = Policy(("sh", "-c", REPORT), fixed_arguments=True,
                    run_as=RunAs(user=name, directory=home, umask=0o027))
    policy.validate()
    # The client tries to name itself root, and to pick the program's HOME: neither holds.
    result, events = trio.run(partial(_session, sock_dir, policy, scratch_user, interactive=interactive,
                                      endpoint="restart-web"),
                              )
    assert result.returncode == 0, result.stderr
    session = next(event for event in events if isinstance(event, Started)).session
    assert result.stdout.decode().splitlines() == [
        str(uid),
        str(gid),
        " ".join(str(group) for group in sorted({gid, extra_gid}, key=[gid, extra_gid].index)),
        f"{home} {name} {name} /bin/sh",
        f"{caller_uid} {caller_gid} {caller_name} restart-web {session}",
        "0027",
        home,
    ]


def test_a_client_cannot_set_the_caller_entries_nor_the_users_home(sock_dir, program_user, scratch_user):
    name, _, _, _, home = program_user
    caller_name, caller_uid, _ = scratch_user
    policy = Policy(run_as=RunAs(user=name))
    options = ("-e", "CAPSUDO_USER=root", "-e", "CAPSUDO_UID=0", "-e", "HOME=/root", "-e", "CAPSUDO_SESSION=mine")
    result, _ = trio.run(partial(_session, sock_dir, policy, scratch_user, "sh", "-c",
                                 'echo "$CAPSUDO_USER $CAPSUDO_UID $HOME $CAPSUDO_SESSION"', options=options))
    user, uid, program_home, session = result.stdout.decode().split()
    assert (user, uid, program_home) == (caller_name, str(caller_uid), home)
    assert session != "mine" and len(session) == 16


def test_an_endpoint_pin_beats_the_users_home(sock_dir, program_user, scratch_user):
    policy = Policy(environment={"HOME": "/srv/pinned"}, run_as=RunAs(user=program_user[0]))
    result, _ = trio.run(_session, sock_dir, policy, scratch_user, "sh", "-c", 'echo "$HOME $USER"')
    assert result.stdout.decode() == f"/srv/pinned {program_user[0]}\n"


def test_a_step_the_child_cannot_take_fails_the_session_in_one_line(sock_dir, program_user, scratch_user):
    # /root is closed to the user; the directory is entered as the user, so the program never starts.
    policy = Policy(run_as=RunAs(user=program_user[0], directory="/root"))
    result, _ = trio.run(_session, sock_dir, policy, scratch_user, "touch", "/tmp/must-not-exist")
    assert result.returncode == 127
    assert result.stderr.decode() == "capsudo: error: unable to run touch: cannot enter /root: Permission denied\n"


def test_a_nofile_limit_is_what_the_program_reads(sock_dir, program_user, scratch_user):
    policy = Policy(run_as=RunAs(user=program_user[0]), limits=ProgramLimits(nofile=77))
    policy.validate()
    result, _ = trio.run(_session, sock_dir, policy, scratch_user, "sh", "-c", "grep 'open files' /proc/self/limits")
    assert result.stdout.decode().split()[3:5] == ["77", "77"]  # soft and hard: the program cannot raise it


def test_a_timeout_stops_the_program_and_the_client_is_told(sock_dir, scratch_user):
    policy = Policy(limits=ProgramLimits(timeout=1))
    started = time.monotonic()
    result, events = trio.run(_session, sock_dir, policy, scratch_user, "sleep", "30")
    assert time.monotonic() - started < 5
    assert result.returncode == 128 + 15
    assert result.stderr.decode() == "capsudo: error: the program ran past its 1s timeout and was stopped\n"
    assert events[-1].outcome == "ran past its 1s timeout and was stopped"


def test_a_program_that_ignores_sigterm_is_killed_after_the_grace(sock_dir, scratch_user):
    policy = Policy(limits=ProgramLimits(timeout=0.5))
    result, _ = trio.run(_session, sock_dir, policy, scratch_user, "sh", "-c", "trap '' TERM; sleep 30")
    assert result.returncode == 128 + 9
    assert "ran past its 0.5s timeout" in result.stderr.decode()


def _session_groups(session: str) -> list[str]:
    return [os.path.join(find_place(limit).directory, f"capsudo-{session}") for limit in ("memory", "tasks")]


def test_past_its_cgroup_memory_limit_the_program_is_killed(sock_dir, program_user, scratch_user):
    policy = Policy(run_as=RunAs(user=program_user[0]), limits=ProgramLimits(memory=32 * MiB))
    policy.validate()
    result, events = trio.run(_session, sock_dir, policy, scratch_user, "/usr/bin/python3", "-c",
                              "x = b'x' * (256 << 20); print('survived')")
    assert result.stdout == b""
    assert result.returncode == 128 + 9
    assert result.stderr.decode() == "capsudo: error: the program went past its 32M memory limit and was killed\n"
    session = events[0].session
    assert not any(os.path.exists(group) for group in _session_groups(session))


def test_the_program_runs_in_a_group_of_its_own_that_is_gone_after(sock_dir, program_user, scratch_user):
    policy = Policy(run_as=RunAs(user=program_user[0]), limits=ProgramLimits(memory=64 * MiB, tasks=8))
    # A background leftover must not keep the group (nor itself) alive past the session.
    result, events = trio.run(_session, sock_dir, policy, scratch_user, "sh", "-c",
                              "cat /proc/self/cgroup; setsid sleep 30 >/dev/null 2>&1 &")
    session = events[0].session
    lines = result.stdout.decode().splitlines()
    assert any(line.split(":")[1] == "memory" and line.endswith(f"/capsudo-{session}") for line in lines)
    assert any(line.split(":")[1] == "pids" and line.endswith(f"/capsudo-{session}") for line in lines)
    assert not any(os.path.exists(group) for group in _session_groups(session))


def test_a_tasks_limit_is_enforced(sock_dir, program_user, scratch_user):
    # The shell and two sleepers fill three tasks: the third sleeper cannot be started.
    policy = Policy(run_as=RunAs(user=program_user[0]), limits=ProgramLimits(tasks=3))
    result, _ = trio.run(_session, sock_dir, policy, scratch_user, "sh", "-c",
                         "for i in 1 2 3; do sleep 1 & done; wait; echo done")
    assert result.returncode == 2 and result.stdout == b""
    assert "fork" in result.stderr.decode().lower()
    roomy = Policy(run_as=RunAs(user=program_user[0]), limits=ProgramLimits(tasks=8))
    result, _ = trio.run(_session, sock_dir, roomy, scratch_user, "sh", "-c",
                         "for i in 1 2 3; do sleep 0.1 & done; wait; echo done")
    assert (result.returncode, result.stdout) == (0, b"done\n")


def test_unenforceable_declarations_are_refused_in_one_line(program_user):
    with pytest.raises(PolicyError, match="nproc is not enforced for a program run as root"):
        Policy(limits=ProgramLimits(nproc=10)).validate()
    Policy(run_as=RunAs(user=program_user[0]), limits=ProgramLimits(nproc=10)).validate()
    with pytest.raises(PolicyError, match="no user 'no-such-user-x'"):
        Policy(run_as=RunAs(user="no-such-user-x")).validate()
    with pytest.raises(PolicyError, match="above the system's fs.nr_open"):
        Policy(limits=ProgramLimits(nofile=1 << 40)).validate()
    with pytest.raises(PolicyError, match="unknown limit 'nofiles'"):
        ProgramLimits.from_mapping({"nofiles": 10})
    assert ProgramLimits.from_mapping({"as": 1 << 30}).address_space == 1 << 30
    with pytest.raises(PolicyError, match="not a whole number"):
        ProgramLimits(memory=-1)


def test_capsudod_names_its_endpoint_by_the_socket_path(daemon):
    result = subprocess.run([CAPSUDO, "-S", daemon.socket, "-e", "CAPSUDO_ENDPOINT=forged", "--", "sh", "-c",
                             'echo "$CAPSUDO_ENDPOINT $CAPSUDO_USER"'], capture_output=True, timeout=10)
    assert result.stdout.decode() == f"{daemon.socket} {pwd.getpwuid(os.getuid()).pw_name}\n"


def _in_memory_group(pid: int) -> str:
    with open(f"/proc/{pid}/cgroup") as groups:
        return next((line.rstrip("\n").split(":", 2)[2] for line in groups
                     if line.split(":")[1] in ("memory", "")), "")


def test_ctrl_z_stops_and_fg_continues_a_program_run_as_a_user_in_its_cgroup(sock_dir, program_user, scratch_user):
    # The whole of it at a real bash: the client as the caller, the program
    # as another user in a memory-limited group, the monitor above it (root,
    # outside the group), ^Z and `fg`, and the group gone after.
    import threading

    import pexpect

    bash_path = shutil.which("bash")
    if bash_path is None or shutil.which("setpriv") is None:
        pytest.skip("needs bash and setpriv")
    name, uid, _, _, _ = program_user
    policy = Policy(run_as=RunAs(user=name), limits=ProgramLimits(memory=64 * MiB))
    policy.validate()
    os.chmod(sock_dir, 0o755)
    path = os.path.join(sock_dir, "run.sock")
    events = []
    served_box = {}
    ready = threading.Event()

    async def serve():
        listener = await open_unix_listener(path, mode=0o777)
        shutdown = Hangup()

        async def handler(channel):
            return await serve_session(channel, policy, SessionLimits(hangup_grace=0.5), shutdown, events=events.append)

        served = ServedEndpoint(listener, handler, log=lambda line: None,
                                hang_up=partial(shutdown.hang_up_all, 0.5), grace=0.5)
        async with trio.open_nursery() as nursery:
            await nursery.start(served.run)
            served_box["stop"] = served.stop
            served_box["token"] = trio.lowlevel.current_trio_token()
            ready.set()

    server = threading.Thread(target=trio.run, args=(serve,), daemon=True)
    server.start()
    assert ready.wait(10)
    prompt = "bash-ready> "
    bash = pexpect.spawn(bash_path, ["--norc", "--noprofile", "-i"], dimensions=(24, 80), timeout=20,
                         env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TERM": "xterm", "LANG": "C",
                              "PS1": prompt})
    try:
        bash.expect_exact(prompt)
        _, caller_uid, caller_gid = scratch_user
        bash.sendline(f"setpriv --reuid={caller_uid} --regid={caller_gid} --clear-groups {CAPSUDO} -S {path} -- "
                      "sh -c 'echo \"uid=$(id -u) pid=$$\"; sleep 2; echo done-$((6 * 7))'")
        bash.expect(r"uid=(\d+) pid=(\d+)")
        assert int(bash.match.group(1)) == uid
        program = int(bash.match.group(2))
        session = next(event for event in events if isinstance(event, Started)).session
        monitor = int(open(f"/proc/{program}/stat").read().rsplit(")", 1)[1].split()[1])
        assert _in_memory_group(program).endswith(f"/capsudo-{session}")
        assert not _in_memory_group(monitor).endswith(f"/capsudo-{session}")
        assert os.stat(f"/proc/{monitor}").st_uid == 0 and os.stat(f"/proc/{program}").st_uid == uid
        deadline = time.monotonic() + 10
        while termios.tcgetattr(bash.child_fd)[3] & termios.ECHO:
            assert time.monotonic() < deadline, "the client never made the terminal raw"
            time.sleep(0.02)
        bash.sendcontrol("z")
        bash.expect(r"Stopped")
        bash.expect_exact(prompt)
        with open(f"/proc/{program}/stat") as stat:
            assert stat.read().rsplit(")", 1)[1].split()[0] == "T"
        time.sleep(2.5)  # longer than the sleep: a program that kept running would be done by now
        bash.sendline("echo still-$((6 * 7))")
        bash.expect_exact("still-42")
        bash.expect_exact(prompt)
        assert b"done-42" not in bash.before
        bash.sendline("fg")
        bash.expect_exact("done-42")
        bash.expect_exact(prompt)
        bash.sendline('echo "status=$?"')
        bash.expect(r"status=(\d+)")
        assert bash.match.group(1) == b"0"
        deadline = time.monotonic() + 5
        while not any(isinstance(event, Ended) for event in events):
            assert time.monotonic() < deadline, "the session never ended"
            time.sleep(0.01)
        assert not any(os.path.exists(group) for group in _session_groups(session))
    finally:
        bash.close(force=True)
        trio.from_thread.run_sync(served_box["stop"], trio_token=served_box["token"])
        server.join(10)
