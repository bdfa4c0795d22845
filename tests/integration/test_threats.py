"""Threats of docs/threat-model.md that no other test checks, against a real daemon.

A holder of an endpoint tries to get more than it pins: through the
environment (LD_PRELOAD, PATH), through arguments, through descriptors it
holds, through the terminal (TIOCSTI from the program), or by opening more
connections than the daemon serves. Each test runs the real capsudod and
capsudo; where a trick only fails because of the daemon, the same trick is
also shown working without it, so that the test could fail.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time

import pexpect
import pytest

from capsudo.core import CALLER_ENTRIES

from .daemon_process import CAPSUDO, capsudo

# Generous: two shared cores, other suites running beside this one.
EXPECT_TIMEOUT = 20

LOADER_VARIABLES = ("LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT")
FORWARDED_UNASKED = {"TERM", "LANG", "LC_ALL", "LC_CTYPE", "LC_MESSAGES", "COLORTERM"}


def _environment_of(output: bytes) -> dict[str, str]:
    """What `env` printed, less the entries the daemon itself gives every program (CAPSUDO_UID, …)."""
    entries = dict(line.split("=", 1) for line in output.decode().splitlines() if "=" in line)
    return {name: value for name, value in entries.items() if name not in CALLER_ENTRIES}


def test_the_clients_own_environment_is_never_forwarded(daemon_factory):
    # Not even to an endpoint that takes the client's entries: only TERM, LANG,
    # LC_* and COLORTERM go unasked; the rest needs -e.
    daemon = daemon_factory("--", "env")
    env = {"PATH": os.environ["PATH"], "LD_LIBRARY_PATH": "/nonexistent", "LD_AUDIT": "/nonexistent/audit.so",
           "CAPSUDO_THREAT_MARKER": "leaked", "LANG": "C"}
    result = capsudo(daemon.socket, env=env)
    assert result.returncode == 0, result.stderr
    seen = _environment_of(result.stdout)
    # LANG shows forwarding works (LC_CTYPE may come from Python's locale coercion).
    assert seen["LANG"] == "C"
    assert set(seen) <= FORWARDED_UNASKED


def test_LD_PRELOAD_asked_for_does_not_reach_an_E_endpoints_program(daemon_factory, tmp_path):
    library = tmp_path / "preload.so"
    library.write_bytes(b"")  # never loaded: the program must not even be told about it
    asked = [arg for name in LOADER_VARIABLES for arg in ("-e", f"{name}={library}")]
    daemon = daemon_factory("-E", "-e", "LANG=C", "--", "env")
    result = capsudo(daemon.socket, *asked)
    assert result.returncode == 0, result.stderr
    assert _environment_of(result.stdout) == {"LANG": "C"}
    # The same request to an endpoint without -E does get through: -E is what stops it.
    open_endpoint = daemon_factory("--", "env", name="open.sock")
    seen = _environment_of(capsudo(open_endpoint.socket, *asked).stdout)
    assert all(seen.get(name) == str(library) for name in LOADER_VARIABLES)


def test_a_clients_PATH_cannot_redirect_an_E_endpoints_program(daemon_factory, tmp_path):
    decoy = tmp_path / "id"
    marker = tmp_path / "decoy-ran"
    decoy.write_text(f"#!/bin/sh\n{shutil.which('touch')} {marker}\necho decoy\n")
    decoy.chmod(0o755)
    daemon = daemon_factory("-E", "--", "id", "-u")
    result = capsudo(daemon.socket, "-e", f"PATH={tmp_path}")
    assert (result.returncode, result.stdout) == (0, f"{os.getuid()}\n".encode())
    assert not marker.exists()
    # Without -E the program is looked up on the client's PATH: the decoy runs.
    open_endpoint = daemon_factory("--", "id", "-u", name="open.sock")
    assert capsudo(open_endpoint.socket, "-e", f"PATH={tmp_path}").stdout == b"decoy\n"
    assert marker.exists()


@pytest.mark.parametrize("arguments", [
    ["sh", "-c", "touch {marker}"],
    ["; touch {marker}"],
    ["--help", "$(touch {marker})"],
])
def test_an_f_endpoint_runs_its_command_whatever_the_client_passes(daemon_factory, tmp_path, arguments):
    marker = tmp_path / "client-command-ran"
    daemon = daemon_factory("-f", "--", "echo", "pinned")
    result = capsudo(daemon.socket, "--", *[argument.format(marker=marker) for argument in arguments])
    assert (result.returncode, result.stdout) == (0, b"pinned\n")
    assert not marker.exists()


def test_appended_arguments_are_argv_entries_never_shell_text(daemon_factory, tmp_path):
    marker = tmp_path / "shell-ran"
    daemon = daemon_factory("--", "echo")
    words = [f"$(touch {marker})", ";", f"touch {marker}", "`id`", "*"]
    result = capsudo(daemon.socket, "--", *words)
    assert result.stdout == (" ".join(words) + "\n").encode()
    assert not marker.exists()


def test_descriptors_the_client_holds_beyond_three_never_reach_the_program(daemon):
    # The client process holds an extra pipe and a socket, inheritable; the
    # program sees exactly its three, the same listing as a program run with
    # close_fds.
    read_end, write_end = os.pipe()
    spare = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    for fd in (read_end, write_end, spare.fileno()):
        os.set_inheritable(fd, True)
    try:
        result = capsudo(daemon.socket, "--", "sh", "-c", "ls /proc/$$/fd", input=b"",
                         pass_fds=(read_end, write_end, spare.fileno()))
    finally:
        os.close(read_end)
        os.close(write_end)
        spare.close()
    assert result.stdout.split() == [b"0", b"1", b"2"]


def _hold_connections(path: str, count: int) -> list[socket.socket]:
    held = []
    for _ in range(count):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
        held.append(sock)
    return held


def test_connections_past_max_sessions_get_a_clear_refusal_then_service_resumes(daemon_factory):
    daemon = daemon_factory("--max-sessions", "2", "--handshake-timeout", "60")
    held = _hold_connections(daemon.socket, 2)
    try:
        time.sleep(0.3)  # let the daemon accept both
        started = time.monotonic()
        refused = capsudo(daemon.socket, "true")
        assert time.monotonic() - started < 10
        assert refused.returncode == 1
        assert refused.stderr == b"capsudo: error: too many sessions (limit 2); try again later\n"
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 10
    while (served := capsudo(daemon.socket, "true")).returncode != 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert served.returncode == 0, served.stderr
    assert daemon.process.poll() is None


INJECTOR = (
    "import fcntl, sys, termios\n"
    "for byte in sys.argv[1].encode():\n"
    "    fcntl.ioctl(0, termios.TIOCSTI, bytes([byte]))\n"
)


@pytest.mark.terminal
def test_TIOCSTI_from_an_interactive_program_cannot_type_into_the_callers_terminal(daemon, tmp_path):
    """The program's terminal is the daemon's pty: what it pushes into its
    input comes back to itself, never to the shell the caller typed at."""
    shell = pexpect.spawn("/bin/sh", env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TERM": "xterm",
                                          "PS1": "threat-ready> "},
                          dimensions=(24, 80), timeout=EXPECT_TIMEOUT)
    try:
        shell.expect_exact("threat-ready> ")
        # Control: run directly at the caller's terminal, the injection does type a command.
        direct = tmp_path / "injected-directly"
        shell.sendline(f"{sys.executable} -c '{INJECTOR}' 'touch {direct}\n'")
        shell.expect_exact("threat-ready> ")
        deadline = time.monotonic() + 10
        while not direct.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        if not direct.exists():
            pytest.skip("TIOCSTI is refused on this machine: nothing to defend against")
        shell.expect_exact("threat-ready> ")

        through = tmp_path / "injected-through-capsudo"
        shell.sendline(f"{CAPSUDO} -S {daemon.socket} -i -- {sys.executable} -c '{INJECTOR}' 'touch {through}\n';"
                       " echo injector-status=$?")
        shell.expect(r"injector-status=(\d+)")
        # Status 0: TIOCSTI succeeded, on the program's own terminal.
        assert shell.match.group(1) == b"0", shell.before
        shell.expect_exact("threat-ready> ")
        shell.sendline("echo settled")
        shell.expect_exact("settled")
        shell.expect_exact("threat-ready> ")
        time.sleep(0.5)
        assert not through.exists()
    finally:
        shell.close(force=True)


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _settled_descriptors(pid: int) -> int:
    """The daemon's descriptor count once it stops changing (start-up done)."""
    previous = _descriptors(pid)
    for _ in range(50):
        time.sleep(0.1)
        if (count := _descriptors(pid)) == previous:
            return count
        previous = count
    return previous


def _children(pid: int) -> list[str]:
    """The states of pid's children."""
    states = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                states.append(fields[0])
    return states


def test_out_of_descriptors_the_daemon_refuses_or_waits_without_spinning_and_recovers(daemon):
    import resource

    pid = daemon.process.pid
    idle = _settled_descriptors(pid)
    original = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    try:
        # One descriptor to spare: the connection is accepted, the three
        # delegated ones cannot be received; the session is refused in one line.
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (idle + 1, original[1]))
        refused = capsudo(daemon.socket, "true")
        assert refused.returncode == 1 and refused.stderr.count(b"\n") == 1, refused.stderr
        assert refused.stderr.startswith(b"capsudo: error: ")
        # None to spare: accept() fails; the client waits in the backlog while
        # the daemon retries at a low rate instead of spinning.
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (idle, original[1]))
        waiting = subprocess.Popen([CAPSUDO, "-S", daemon.socket, "--", "echo", "served"],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(0.3)
        cpu_before, started = _cpu_seconds(pid), time.monotonic()
        time.sleep(2)
        cpu_share = (_cpu_seconds(pid) - cpu_before) / (time.monotonic() - started)
        assert waiting.poll() is None, "served although the daemon could not accept"
        assert cpu_share < 0.25, f"the daemon used {cpu_share:.0%} of a core while it could not accept"
    finally:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, original)
    output, _ = waiting.communicate(timeout=20)
    assert (waiting.returncode, output) == (0, b"served\n")
    assert daemon.log().count("cannot accept connections: Too many open files") == 1
    assert daemon.process.poll() is None


def test_many_sessions_leave_no_descriptor_and_no_zombie_behind(daemon):
    from capsudo.core import run

    pid = daemon.process.pid
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        run(["true"], endpoint=daemon.socket, stdin=devnull, stdout=devnull, stderr=devnull)
        time.sleep(0.3)
        before = _descriptors(pid)
        statuses = [run(["sh", "-c", f"exit {i % 3}"] if i % 2 else ["no-such-program-here"],
                        endpoint=daemon.socket, stdin=devnull, stdout=devnull, stderr=devnull).status
                    for i in range(60)]
    finally:
        os.close(devnull)
    assert statuses == [i % 3 if i % 2 else 127 for i in range(60)]
    deadline = time.monotonic() + 5
    while (_descriptors(pid), _children(pid)) != (before, []) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _descriptors(pid) == before
    assert _children(pid) == []


def test_a_client_flooding_messages_after_End_does_not_stop_others_being_served(daemon):
    import array
    import threading

    from capsudo.proto import lean

    flooder = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    flooder.connect(daemon.socket)
    read_end, write_end = os.pipe()
    try:
        flooder.sendall(lean.arg("sleep") + lean.arg("30"))
        flooder.sendmsg([lean.fd(3)], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                         array.array("i", [read_end, write_end, write_end]))])
        flooder.sendall(lean.end())
        burst = lean.winsize(24, 80) * 5000
        stop = threading.Event()
        sent = [0]

        def flood() -> None:
            try:
                while not stop.is_set():
                    flooder.sendall(burst)
                    sent[0] += 5000
            except OSError:
                pass

        thread = threading.Thread(target=flood)
        thread.start()
        try:
            time.sleep(0.3)
            durations = []
            for _ in range(5):
                started = time.monotonic()
                result = capsudo(daemon.socket, "--", "echo", "served")
                durations.append(time.monotonic() - started)
                assert (result.returncode, result.stdout) == (0, b"served\n"), result.stderr
        finally:
            stop.set()
            flooder.shutdown(socket.SHUT_RDWR)
            thread.join(10)
    finally:
        flooder.close()
        os.close(read_end)
        os.close(write_end)
    # Many thousands of messages were taken in while the others were served.
    assert sent[0] >= 5000
    assert max(durations) < 5, durations
    assert daemon.process.poll() is None
