"""capsudod and capsudo end to end over a Unix socket: the real commands."""

from __future__ import annotations

import os
import resource
import signal
import stat
import subprocess
import time

import pytest

from .daemon_process import CAPSUDO, CAPSUDOD, capsudo, wait_for_path


@pytest.mark.parametrize(
    "command, status",
    [
        (["true"], 0),
        (["sh", "-c", "exit 3"], 3),
        (["sh", "-c", "kill -9 $$"], 137),
        (["sh", "-c", "kill -TERM $$"], 143),
    ],
)
def test_status_is_relayed(daemon, command, status):
    assert capsudo(daemon.socket, "--", *command).returncode == status


def test_program_that_cannot_start_gives_127_and_a_message(daemon):
    result = capsudo(daemon.socket, "--", "no-such-program-here")
    assert result.returncode == 127
    assert result.stderr.decode() == "capsudo: error: unable to run no-such-program-here: command not found\n"


def test_program_that_is_not_executable_gives_127(daemon, tmp_path):
    script = tmp_path / "plain"
    script.write_text("echo hi\n")
    result = capsudo(daemon.socket, "--", str(script))
    assert result.returncode == 127
    assert b"Permission denied" in result.stderr


def test_stdin_stdout_stderr_are_the_callers(daemon):
    result = capsudo(daemon.socket, "--", "sh", "-c", "cat; echo to-stderr >&2", input=b"piped\n" * 1000)
    assert result.returncode == 0
    assert result.stdout == b"piped\n" * 1000
    assert result.stderr == b"to-stderr\n"


def test_client_arguments_are_appended_to_the_pinned_program(daemon_factory):
    daemon = daemon_factory("--", "echo", "pinned")
    assert capsudo(daemon.socket, "--", "and", "more").stdout == b"pinned and more\n"


def test_f_ignores_client_arguments(daemon_factory):
    daemon = daemon_factory("-f", "--", "echo", "pinned")
    assert capsudo(daemon.socket, "--", "rm", "-rf", "/nonexistent").stdout == b"pinned\n"


def test_no_program_and_no_arguments_runs_sh(daemon):
    assert capsudo(daemon.socket, input=b"echo from-sh\n").stdout == b"from-sh\n"


def _without_caller_entries(output: bytes) -> bytes:
    """`env` output less the entries the daemon adds for every program (CAPSUDO_UID, …)."""
    return b"".join(line for line in output.splitlines(keepends=True) if not line.startswith(b"CAPSUDO_"))


def test_environment_is_cleared_and_built_from_entries(daemon_factory):
    daemon = daemon_factory("-e", "PINNED=daemon", "-e", "SHARED=daemon", "--", "env")
    env = {"PATH": os.environ["PATH"], "TERM": "xterm-test", "SECRET_TOKEN": "must-not-pass", "LANG": "C.UTF-8"}
    result = capsudo(daemon.socket, "-e", "SHARED=client", "-e", "ASKED=client", env=env)
    lines = sorted(_without_caller_entries(result.stdout).decode().splitlines())
    assert lines == sorted(["PINNED=daemon", "SHARED=daemon", "ASKED=client", "TERM=xterm-test", "LANG=C.UTF-8"])


def test_E_ignores_client_entries(daemon_factory):
    daemon = daemon_factory("-E", "-e", "ONLY=this", "--", "env")
    result = capsudo(daemon.socket, "-e", "ASKED=client", env={"TERM": "xterm", "PATH": os.environ["PATH"]})
    assert _without_caller_entries(result.stdout) == b"ONLY=this\n"


def test_a_pinned_program_without_E_is_warned_about_at_start(daemon_factory):
    pinned = daemon_factory("-f", "--", "/bin/echo", "pinned")
    assert capsudo(pinned.socket).stdout == b"pinned\n"
    assert "warning: the program is pinned but its environment is not" in pinned.log()
    assert "add -E" in pinned.log()
    for quiet in (daemon_factory("-fE", "--", "/bin/echo", "pinned"), daemon_factory()):
        assert capsudo(quiet.socket, "true").returncode == 0
        assert "warning" not in quiet.log()


def test_combined_flags_parse(daemon_factory):
    daemon = daemon_factory("-fE", "-eK=V", "--", "env")
    assert _without_caller_entries(capsudo(daemon.socket, "-e", "X=1").stdout) == b"K=V\n"


def test_unknown_option_is_a_usage_error_not_a_program(sock_dir):
    result = subprocess.run([CAPSUDOD, "-S", f"{sock_dir}/s", "-x", "true"], capture_output=True, timeout=10)
    assert result.returncode == 2
    assert result.stderr.decode().startswith("capsudod: error: unknown option -x")
    assert not os.path.exists(f"{sock_dir}/s")
    result = subprocess.run([CAPSUDO, "-q", "true"], capture_output=True, timeout=10)
    assert result.returncode == 2
    assert result.stderr.decode().startswith("capsudo: error: unknown option -q")


@pytest.mark.parametrize("flags", [["-o", "no-such-user-x"], ["-m", "8"], ["-m", "010000"], ["-e", "NOEQUALS"]])
def test_invalid_daemon_values_are_one_line_usage_errors(sock_dir, flags):
    result = subprocess.run([CAPSUDOD, "-S", f"{sock_dir}/s", *flags], capture_output=True, timeout=10)
    assert result.returncode == 2
    assert result.stderr.decode().count("\n") == 1


def test_program_runs_in_its_own_session(daemon):
    result = capsudo(daemon.socket, "--", "sh", "-c", "cut -d' ' -f1,6 /proc/$$/stat")
    pid, session = result.stdout.decode().split()
    assert pid == session
    assert int(session) != os.getsid(daemon.process.pid)


def test_program_sees_only_its_three_descriptors(daemon):
    # Compared with the same program run directly: nothing of the daemon's leaks.
    listing = ["sh", "-c", "ls /proc/$$/fd"]
    direct = subprocess.run(listing, capture_output=True, stdin=subprocess.DEVNULL, close_fds=True)
    through = capsudo(daemon.socket, "--", *listing, input=b"")
    assert through.stdout == direct.stdout
    assert through.stdout.split() == [b"0", b"1", b"2"]


def test_program_found_on_the_safe_path_without_PATH(daemon_factory):
    # The program's environment has no PATH, yet `env` is found (on the safe default).
    daemon = daemon_factory("-E", "--", "env")
    result = capsudo(daemon.socket)
    assert (result.returncode, _without_caller_entries(result.stdout)) == (0, b"")
    daemon = daemon_factory("-E", "-e", "PATH=/nonexistent", "--", "ls", name="nopath.sock")
    assert capsudo(daemon.socket).returncode == 127


def test_each_session_is_logged(daemon):
    capsudo(daemon.socket, "--", "sh", "-c", "exit 5")
    time.sleep(0.2)
    line = [line for line in daemon.log().splitlines() if "session" in line][-1]
    assert f"uid={os.getuid()}" in line and "pid=" in line and "gid=" in line
    assert "argv=\"sh -c 'exit 5'\"" in line
    assert "status=5" in line and "duration=" in line


def test_cannot_connect_names_the_endpoint(sock_dir):
    result = subprocess.run([CAPSUDO, "-S", f"{sock_dir}/absent", "true"], capture_output=True, timeout=10)
    assert result.returncode == 1
    assert result.stderr.decode() == f"capsudo: error: no endpoint at {sock_dir}/absent: is its daemon running?\n"


def test_endpoint_from_the_environment(daemon):
    result = subprocess.run(
        [CAPSUDO, "echo", "via-env"], capture_output=True, timeout=10,
        env={"CAPSUDO_SOCKET": daemon.socket, "PATH": os.environ["PATH"]},
    )
    assert result.stdout == b"via-env\n"


def test_sigterm_stops_the_daemon_and_removes_the_socket(daemon):
    assert capsudo(daemon.socket, "true").returncode == 0
    assert daemon.stop(signal.SIGTERM) == 0
    assert not os.path.exists(daemon.socket)


def test_sigterm_hangs_up_running_programs(daemon, tmp_path):
    marker = tmp_path / "hup"
    client = subprocess.Popen(
        [CAPSUDO, "-S", daemon.socket, "--", "sh", "-c", f"trap 'echo hup > {marker}; exit 0' HUP; sleep 60 & wait"],
        stdin=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    assert daemon.stop(signal.SIGTERM) == 0
    assert marker.read_text() == "hup\n"
    client.wait(10)
    assert not os.path.exists(daemon.socket)


def _start_sighup_ignoring_program(daemon, tmp_path) -> tuple[subprocess.Popen, int]:
    """A client whose program ignores SIGHUP; (the client, the program's pid)."""
    pidfile = tmp_path / "pid"
    client = subprocess.Popen(
        [CAPSUDO, "-S", daemon.socket, "--", "sh", "-c", f"trap '' HUP; echo $$ > {pidfile}; exec sleep 60"],
        stdin=subprocess.DEVNULL,
    )
    wait_for_path(str(pidfile))
    time.sleep(0.1)
    return client, int(pidfile.read_text())


def test_sigterm_kills_a_program_that_ignores_sighup_after_the_grace(daemon_factory, tmp_path):
    daemon = daemon_factory("--hangup-grace", "1")
    client, pid = _start_sighup_ignoring_program(daemon, tmp_path)
    started = time.monotonic()
    assert daemon.stop(signal.SIGTERM) == 0
    stopped = time.monotonic() - started
    assert not os.path.exists(f"/proc/{pid}") or _wait_gone(pid, 1)
    assert 0.9 <= stopped < 5, stopped
    # The client learns its program was killed: 128 + SIGKILL.
    assert client.wait(10) == 128 + signal.SIGKILL


def test_sigterm_with_nothing_running_does_not_wait_for_the_grace(daemon_factory):
    daemon = daemon_factory("--hangup-grace", "30")
    assert capsudo(daemon.socket, "true").returncode == 0
    started = time.monotonic()
    assert daemon.stop(signal.SIGTERM, timeout=10) == 0
    assert time.monotonic() - started < 3


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        with open(f"/proc/{pid}/stat") as f:
            if f.read().split(") ")[1].startswith("Z"):
                return True
        time.sleep(0.02)
    return False


def test_client_that_leaves_gets_its_program_hung_up(daemon_factory, tmp_path):
    daemon = daemon_factory("--hangup-grace", "0.5")
    marker = tmp_path / "hup"
    pidfile = tmp_path / "pid"
    client = subprocess.Popen(
        [CAPSUDO, "-S", daemon.socket, "--", "sh", "-c",
         f"echo $$ > {pidfile}; trap 'echo hup > {marker}; exit 0' HUP; while :; do sleep 0.05; done"],
        stdin=subprocess.DEVNULL,
    )
    wait_for_path(str(pidfile))
    client.kill()
    client.wait()
    deadline = time.monotonic() + 5
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert marker.read_text() == "hup\n"
    time.sleep(0.3)
    assert "client hung up" in daemon.log()


def test_program_ignoring_sighup_is_killed_after_the_grace(daemon_factory, tmp_path):
    daemon = daemon_factory("--hangup-grace", "0.5")
    client, pid = _start_sighup_ignoring_program(daemon, tmp_path)
    client.kill()
    started = time.monotonic()
    assert _wait_gone(pid, 5)
    assert time.monotonic() - started >= 0.4


def test_delegation_makes_a_narrower_endpoint(daemon, sock_dir):
    narrow = f"{sock_dir}/narrow"
    broad_client = subprocess.Popen(
        [CAPSUDO, "-S", daemon.socket, "--", CAPSUDOD, "-S", narrow, "-f", "--", "/bin/echo", "narrowed"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_path(narrow)
        result = capsudo(narrow, "--", "cat", "/etc/shadow")
        assert result.returncode == 0
        assert result.stdout == b"narrowed\n"
    finally:
        broad_client.terminate()
        broad_client.wait(10)
    # Revoking the broad session hangs up the narrow daemon, which removes its socket.
    deadline = time.monotonic() + 5
    while os.path.exists(narrow) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(narrow)


def test_many_sessions_at_once(daemon):
    clients = [
        subprocess.Popen([CAPSUDO, "-S", daemon.socket, "--", "sh", "-c", f"sleep 0.3; exit {i}"],
                         stdin=subprocess.DEVNULL)
        for i in range(20)
    ]
    started = time.monotonic()
    assert [c.wait(20) for c in clients] == list(range(20))
    assert time.monotonic() - started < 5


@pytest.mark.root
def test_socket_mode_and_owner(daemon_factory, scratch_user):
    name, uid, gid = scratch_user
    daemon = daemon_factory("-o", name, "-m", "0660")
    st = os.stat(daemon.socket)
    assert stat.S_IMODE(st.st_mode) == 0o660
    assert (st.st_uid, st.st_gid) == (uid, gid)
    daemon = daemon_factory("-o", f":{gid}", name="group.sock")
    st = os.stat(daemon.socket)
    assert stat.S_IMODE(st.st_mode) == 0o770 and (st.st_uid, st.st_gid) == (0, gid)


@pytest.mark.root
def test_unprivileged_user_is_refused_at_the_socket(daemon, scratch_user, sock_dir):
    name, uid, gid = scratch_user
    os.chmod(sock_dir, 0o755)
    result = subprocess.run(
        ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", CAPSUDO, "-S", daemon.socket, "true"],
        capture_output=True, timeout=10,
    )
    assert result.returncode == 1
    assert result.stderr.decode() == (
        f"capsudo: error: cannot connect to {daemon.socket}: permission denied "
        "(the socket is owned by root:root, mode 770; you are not in group root)\n"
    )


@pytest.mark.root
def test_failed_fork_fails_the_session_and_the_daemon_keeps_serving(scratch_user, sock_dir):
    # RLIMIT_NPROC does not bind root, so the daemon runs as a scratch user
    # with a low limit; processes of that user started elsewhere use it up.
    name, uid, gid = scratch_user
    as_user = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups"]
    # The daemon's own directory: one that others could write would be refused.
    os.chown(sock_dir, uid, gid)
    path = f"{sock_dir}/nproc.sock"
    daemon = subprocess.Popen(
        [*as_user, CAPSUDOD, "-S", path, "-m", "0777"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NPROC, (16, 16)),
    )
    sleepers = []
    try:
        wait_for_path(path)
        assert capsudo(path, "true").returncode == 0
        sleepers = [subprocess.Popen([*as_user, "sleep", "60"]) for _ in range(20)]
        time.sleep(0.3)
        starved = capsudo(path, "true")
        assert starved.returncode == 127
        assert starved.stderr.decode().startswith("capsudo: error: unable to run true: ")
        for sleeper in sleepers:
            sleeper.kill()
            sleeper.wait()
        assert capsudo(path, "--", "echo", "again").stdout == b"again\n"
        assert daemon.poll() is None
    finally:
        for sleeper in sleepers:
            sleeper.kill()
        daemon.kill()
        daemon.wait()
