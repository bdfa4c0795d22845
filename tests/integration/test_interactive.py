"""Interactive sessions end to end: a real capsudod, the real capsudo client,
and a real terminal around the client (a pty driven by pexpect, with the
client typed at a shell on it where the shell's view matters).

The program's pty is the daemon's; the terminal here is the caller's. What is
checked is what a person at that terminal would see: prompts and answers,
sizes, the terminal's settings after the session, statuses, and what happens
to the program when the client or the daemon goes away; and that no client,
whatever it does with its descriptors, holds up another's session (down to a
FUSE file system, served here, that never answers a write).
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import shutil
import signal
import struct
import subprocess
import termios
import threading
import time

import pexpect
import pytest

from .daemon_process import CAPSUDO, capsudo

pytestmark = pytest.mark.terminal

# Generous: two shared cores, other suites running beside this one.
EXPECT_TIMEOUT = 20


def terminal_env(**extra: str) -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TERM": "xterm", "LANG": "C"}
    env.update(extra)
    return env


def spawn_client(socket: str, *argv: str, rows: int = 24, cols: int = 80, **env: str) -> pexpect.spawn:
    """capsudo on a terminal of its own, as if typed at a shell."""
    return pexpect.spawn(
        CAPSUDO,
        ["-S", socket, *argv],
        env=terminal_env(**env),
        dimensions=(rows, cols),
        timeout=EXPECT_TIMEOUT,
    )


def in_raw_mode(terminal: pexpect.spawn) -> bool:
    # tcgetattr on the master reads the terminal's settings as the client set them.
    lflag = termios.tcgetattr(terminal.child_fd)[3]
    return not lflag & (termios.ICANON | termios.ECHO)


def finish(child: pexpect.spawn) -> int:
    """Wait for the client's end on its terminal; its exit status."""
    child.expect(pexpect.EOF)
    child.close()
    assert child.signalstatus is None, f"the client died of signal {child.signalstatus}"
    return child.exitstatus


class OuterShell:
    """A shell on a terminal, from which capsudo is run like a user would."""

    PROMPT = "outer-ready> "

    def __init__(self, socket: str) -> None:
        self.socket = socket
        self.child = pexpect.spawn(
            "sh", env=terminal_env(PS1=self.PROMPT), dimensions=(24, 80), timeout=EXPECT_TIMEOUT
        )
        self.child.expect_exact(self.PROMPT)

    def run(self, line: str) -> None:
        self.child.sendline(line)

    def prompt(self) -> None:
        self.child.expect_exact(self.PROMPT)

    def settings(self) -> str:
        """`stty -g` of this terminal, as the shell reads it."""
        self.run('echo "<<$(stty -g)>>"')
        self.child.expect(r"<<([0-9a-f:]+)>>")
        value = self.child.match.group(1).decode()
        self.prompt()
        return value

    def status(self) -> int:
        self.child.expect(r"status=(\d+)")
        value = int(self.child.match.group(1))
        self.prompt()
        return value

    def in_raw_mode(self) -> bool:
        return in_raw_mode(self.child)

    def close(self) -> None:
        self.child.close(force=True)


@pytest.fixture
def outer_shell(daemon):
    shell = OuterShell(daemon.socket)
    yield shell
    shell.close()


def session_line(daemon, needle: str, timeout: float = 10.0) -> str:
    """The daemon's log line for the session whose argv contains needle."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [line for line in daemon.log().splitlines() if " session " in f" {line}" and needle in line]
        if lines:
            return lines[-1]
        if time.monotonic() > deadline:
            raise AssertionError(f"no session line with {needle!r} in the log:\n{daemon.log()}")
        time.sleep(0.05)


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def child_of(parent: int) -> int:
    """The pid of parent's only child."""
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    if int(stat.read().rsplit(")", 1)[1].split()[1]) == parent:
                        children.append(int(entry))
            except (FileNotFoundError, ProcessLookupError):
                pass
    assert len(children) == 1, f"{parent} has children {children}"
    return children[0]


def wait_gone(pid: int, timeout: float) -> float:
    """Seconds until pid is no longer running; fails after timeout."""
    start = time.monotonic()
    while pid_alive(pid):
        if time.monotonic() - start > timeout:
            raise AssertionError(f"process {pid} still runs after {timeout}s")
        time.sleep(0.02)
    return time.monotonic() - start


# --- typing into the program ------------------------------------------------------


def test_prompt_and_typed_answer(daemon):
    child = spawn_client(daemon.socket, "--", "sh", "-c", 'printf "name? "; read x; echo "hello $x"')
    child.expect_exact("name? ")
    child.sendline("world")
    child.expect_exact("hello world")
    assert finish(child) == 0


def test_program_terminal_is_not_the_clients(daemon):
    child = spawn_client(daemon.socket, "--", "tty")
    child.expect(r"(/dev/pts/\d+)")
    program_tty = child.match.group(1).decode()
    client_tty = os.readlink(f"/proc/{child.pid}/fd/0")
    assert program_tty != client_tty
    assert finish(child) == 0


def test_control_characters_reach_the_program_as_signals(daemon):
    # ^C typed at the caller's terminal goes through raw mode to the pty,
    # whose line discipline turns it into SIGINT for the program.
    child = spawn_client(daemon.socket, "--", "sh", "-c", "echo ready; exec sleep 100")
    child.expect_exact("ready")
    child.sendcontrol("c")
    assert finish(child) == 128 + signal.SIGINT


# --- window size -------------------------------------------------------------------


def test_resize_reaches_the_program_and_does_not_end_the_session(daemon):
    child = spawn_client(
        daemon.socket, "--", "sh", "-c", 'while read line; do echo "size=$(stty size)"; done; echo finished',
        rows=24, cols=80,
    )
    child.sendline("")
    child.expect_exact("size=24 80")
    child.setwinsize(40, 132)
    # The new size travels on the session's socket, the keystrokes through the
    # pty: ask until the program reports it, within a bound.
    deadline = time.monotonic() + 10
    while True:
        child.sendline("")
        index = child.expect_exact(["size=40 132", "size=24 80"])
        if index == 0:
            break
        assert time.monotonic() < deadline, "the program never saw the new size"
    # The session goes on after the resize, and again after a second one.
    child.setwinsize(30, 100)
    deadline = time.monotonic() + 10
    while True:
        child.sendline("")
        index = child.expect(["size=30 100", r"size=\d+ \d+"])
        if index == 0:
            break
        assert time.monotonic() < deadline, "the program never saw the second size"
    child.sendcontrol("d")
    child.expect_exact("finished")
    assert finish(child) == 0


def test_a_storm_of_resizes_during_output_ends_nothing(daemon):
    child = spawn_client(
        daemon.socket, "--", "sh", "-c",
        'seq 1 20000 >/dev/tty; while read line; do echo "size=$(stty size)"; done; echo finished',
    )
    child.expect_exact("1\r\n")
    for step in range(200):
        child.setwinsize(20 + step % 30, 60 + step % 70)
    child.setwinsize(45, 150)
    child.expect_exact("20000\r\n")
    deadline = time.monotonic() + 10
    while True:
        child.sendline("")
        index = child.expect(["size=45 150", r"size=\d+ \d+"])
        if index == 0:
            break
        assert time.monotonic() < deadline, "the program never saw the last size"
    child.sendcontrol("d")
    child.expect_exact("finished")
    assert finish(child) == 0


def test_initial_size_comes_from_the_callers_terminal(daemon):
    child = spawn_client(daemon.socket, "--", "stty", "size", rows=33, cols=111)
    child.expect_exact("33 111")
    assert finish(child) == 0


def test_window_change_signal_reaches_the_program(daemon):
    child = spawn_client(
        daemon.socket, "--", "sh", "-c",
        'trap \'echo "winch $(stty size)"; exit 0\' WINCH; echo ready; while :; do sleep 0.05; done',
    )
    child.expect_exact("ready")
    child.setwinsize(50, 70)
    child.expect_exact("winch 50 70")
    assert finish(child) == 0


# --- the caller's terminal settings --------------------------------------------------


def test_terminal_settings_restored_after_a_session(outer_shell):
    before = outer_shell.settings()
    outer_shell.run(f"{CAPSUDO} -S {outer_shell.socket} -- sh -c 'echo session-$((6 * 7)); read x'; echo status=$?")
    outer_shell.child.expect_exact("session-42")
    # Raw mode while the session runs, so "identical after" means restored.
    assert outer_shell.in_raw_mode()
    outer_shell.child.sendline("")
    assert outer_shell.status() == 0
    assert not outer_shell.in_raw_mode()
    assert outer_shell.settings() == before


def test_terminal_settings_restored_after_a_refused_session(outer_shell):
    before = outer_shell.settings()
    outer_shell.run(f"{CAPSUDO} -S {outer_shell.socket} -- /nonexistent/program; echo status=$?")
    outer_shell.child.expect(r"capsudo: error: unable to run /nonexistent/program[^\r\n]*\r\n")
    assert outer_shell.status() == 127
    assert outer_shell.settings() == before


def test_terminal_settings_restored_after_the_daemon_is_killed(daemon, outer_shell):
    before = outer_shell.settings()
    outer_shell.run(f"{CAPSUDO} -S {outer_shell.socket} -- sh -c 'echo session-$((6 * 7)) $$; exec sleep 100'; echo status=$?")
    outer_shell.child.expect(r"session-42 (\d+)")
    program = int(outer_shell.child.match.group(1))
    assert outer_shell.in_raw_mode()
    daemon.process.send_signal(signal.SIGKILL)
    daemon.process.wait(10)
    # The pty died with the daemon: the program got its hang-up.
    wait_gone(program, timeout=10)
    outer_shell.child.expect(r"capsudo: error: ([^\r\n]*)\r\n")
    report = outer_shell.child.match.group(1).decode()
    assert "daemon" in report
    assert outer_shell.status() == 1
    assert outer_shell.settings() == before


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_terminal_settings_restored_when_the_client_is_signalled(outer_shell, signum):
    before = outer_shell.settings()
    outer_shell.run(f"{CAPSUDO} -S {outer_shell.socket} -- sh -c 'echo session-$((6 * 7)); exec sleep 100'; echo status=$?")
    outer_shell.child.expect_exact("session-42")
    assert outer_shell.in_raw_mode()
    client = child_of(outer_shell.child.pid)
    os.kill(client, signum)
    assert outer_shell.status() == 128 + signum
    assert outer_shell.settings() == before


def test_stopped_and_continued_client_is_raw_again(daemon):
    """bash puts its own settings back when a job stops; after `fg` the
    client must make the terminal raw again, and pass on a size changed
    while it was stopped. While it is stopped the daemon leaves the
    terminal's input to the shell, so `fg` reaches bash."""
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash is not installed")
    shell = pexpect.spawn(
        bash, ["--norc", "--noprofile", "-i"], env=terminal_env(PS1="bash-ready> "), dimensions=(24, 80),
        timeout=EXPECT_TIMEOUT,
    )
    try:
        shell.expect_exact("bash-ready> ")
        shell.sendline('echo "<<$(stty -g)>>"')
        shell.expect(r"<<([0-9a-f:]+)>>")
        before = shell.match.group(1)
        shell.expect_exact("bash-ready> ")
        shell.sendline(
            f"{CAPSUDO} -S {daemon.socket} -- sh -c "
            "'echo session-$((6 * 7)); while read line; do echo \"line=$line $(stty size)\"; done'"
        )
        shell.expect_exact("session-42")
        assert in_raw_mode(shell)
        os.kill(child_of(shell.pid), signal.SIGSTOP)
        shell.expect_exact("bash-ready> ")
        # Typed while the job is stopped, and ahead while nothing reads the
        # terminal (the shell waits for sleep): the shell's, not the program's.
        shell.sendline("sleep 1; read y; echo shell-has-$y")
        shell.sendline("typed-ahead")
        shell.expect_exact("shell-has-typed-ahead")
        shell.expect_exact("bash-ready> ")
        shell.setwinsize(50, 100)
        shell.sendline("fg")
        deadline = time.monotonic() + 10
        while not in_raw_mode(shell):
            assert time.monotonic() < deadline, "the terminal stayed cooked after fg"
            time.sleep(0.05)
        shell.send("typed\r")
        shell.expect_exact("line=typed 50 100")
        assert b"line=echo" not in shell.before
        shell.sendcontrol("d")
        shell.expect_exact("bash-ready> ")
        shell.sendline('echo "status=$?"')  # after fg: the job's status
        shell.expect(r"status=(\d+)")
        assert shell.match.group(1) == b"0"
        shell.sendline('echo "<<$(stty -g)>>"')
        shell.expect(r"<<([0-9a-f:]+)>>")
        assert shell.match.group(1) == before
    finally:
        shell.close(force=True)


# --- a shell -------------------------------------------------------------------------


def test_s_gives_an_interactive_shell(daemon):
    child = spawn_client(daemon.socket, "-s", "-e", "PS1=inner-shell$ ", SHELL="/bin/sh")
    child.expect_exact("inner-shell$ ")
    child.sendline("echo $((6 * 7)); tty")
    child.expect_exact("42")
    child.expect(r"/dev/pts/\d+")
    child.expect_exact("inner-shell$ ")
    # Job control works: the shell has the pty as its controlling terminal.
    child.sendline("sleep 100")
    time.sleep(0.3)
    child.sendcontrol("c")
    child.expect_exact("inner-shell$ ")
    child.sendline("exit 5")
    assert finish(child) == 5


# --- output, end of input, background children -------------------------------------------


def test_every_line_of_seq_arrives_in_each_of_20_runs(daemon):
    expected = b"".join(b"%d\r\n" % number for number in range(1, 200001))
    for run in range(20):
        result = capsudo(daemon.socket, "-i", "--", "seq", "1", "200000", stdin=subprocess.DEVNULL, timeout=60)
        assert result.returncode == 0, result.stderr
        lines = result.stdout.count(b"\n")
        assert lines == 200000, f"run {run}: {lines} lines arrived"
        assert result.stdout == expected, f"run {run}: the output differs"


def test_seq_through_the_callers_terminal(daemon):
    child = spawn_client(daemon.socket, "--", "sh", "-c", "seq 1 200000; echo end-of-seq")
    received = bytearray()
    while True:
        try:
            received += child.read_nonblocking(1 << 16, timeout=EXPECT_TIMEOUT)
        except pexpect.EOF:
            break
    child.close()
    assert child.exitstatus == 0
    lines = bytes(received).split(b"\r\n")
    assert lines[:200000] == [b"%d" % number for number in range(1, 200001)]
    assert lines[200000] == b"end-of-seq"


def test_background_grandchild_does_not_keep_the_session(daemon):
    start = time.monotonic()
    result = capsudo(daemon.socket, "-i", "--", "sh", "-c", "sleep 100 & echo done", stdin=subprocess.DEVNULL)
    elapsed = time.monotonic() - start
    assert (result.returncode, result.stdout) == (0, b"done\r\n")
    assert elapsed < 3


def test_grandchild_holding_the_pty_and_ignoring_hangup_does_not_keep_the_session(daemon, sock_dir):
    # This one survives the terminal's hang-up and keeps its copy of the
    # slave open; the program exits only once the grandchild ignores SIGHUP.
    flag = f"{sock_dir}/ignoring"
    script = (
        f'(trap "" HUP; touch {flag}; exec sleep 100) & '
        f'while [ ! -e {flag} ]; do sleep 0.01; done; echo "done $!"'
    )
    start = time.monotonic()
    result = capsudo(daemon.socket, "-i", "--", "sh", "-c", script, stdin=subprocess.DEVNULL)
    elapsed = time.monotonic() - start
    words = result.stdout.split()
    try:
        assert result.returncode == 0
        assert words[0] == b"done"
        assert elapsed < 3
        assert pid_alive(int(words[1])), "the grandchild should still run: it ignores SIGHUP"
        assert open(f"/proc/{int(words[1])}/cmdline", "rb").read().startswith(b"sleep\0")
    finally:
        if len(words) == 2 and pid_alive(int(words[1])):
            os.kill(int(words[1]), signal.SIGKILL)


def test_end_of_input_reaches_the_program(daemon):
    result = capsudo(daemon.socket, "-i", "--", "cat", input=b"hi\n")
    assert result.returncode == 0
    assert b"hi" in result.stdout
    # Twice: the terminal's echo, and cat's copy.
    assert result.stdout.count(b"hi\r\n") == 2


def test_end_of_input_after_a_partial_line(daemon):
    result = capsudo(daemon.socket, "-i", "--", "sh", "-c", 'read x; echo "got [$x]"', input=b"partial")
    assert result.returncode == 0
    assert b"got [partial]" in result.stdout


# --- statuses and signals --------------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "status"),
    [("exit 0", 0), ("exit 3", 3), ("kill -9 $$", 137), ("kill -TERM $$", 143), ("kill -HUP $$", 129)],
)
def test_statuses_as_in_non_interactive_sessions(daemon, script, status):
    interactive = capsudo(daemon.socket, "-i", "--", "sh", "-c", script, stdin=subprocess.DEVNULL)
    plain = capsudo(daemon.socket, "-n", "--", "sh", "-c", script, stdin=subprocess.DEVNULL)
    assert interactive.returncode == plain.returncode == status


def test_status_through_the_callers_terminal(daemon):
    child = spawn_client(daemon.socket, "--", "sh", "-c", "kill -9 $$")
    assert finish(child) == 137


def test_program_that_cannot_start(daemon):
    result = capsudo(daemon.socket, "-i", "--", "/nonexistent/program", stdin=subprocess.DEVNULL)
    assert result.returncode == 127
    assert result.stderr.decode().startswith("capsudo: error: unable to run /nonexistent/program")
    assert result.stderr.count(b"\n") == 1


# --- clients that go away ------------------------------------------------------------------

HANGUP_RECORDER = (
    'trap \'echo "hup $(date +%s.%N)" >> {log}\' HUP; echo "ready $$"; while :; do sleep 0.1; done'
)


@pytest.mark.parametrize("how", ["kill the client", "close its terminal"])
def test_client_hangup_sends_sighup_then_sigkill(daemon_factory, sock_dir, how):
    grace = 1.5
    daemon = daemon_factory("--hangup-grace", str(grace))
    record = f"{sock_dir}/hangups"
    child = spawn_client(daemon.socket, "--", "sh", "-c", HANGUP_RECORDER.format(log=record))
    child.expect(r"ready (\d+)")
    program = int(child.match.group(1))
    assert pid_alive(program)
    gone_at = time.time()
    if how == "kill the client":
        os.kill(child.pid, signal.SIGKILL)
    else:
        child.ptyproc.fileobj.close()  # the terminal hangs up: the client gets SIGHUP
    gone = wait_gone(program, timeout=grace + 15)
    hangups = open(record).read().split()
    assert hangups and hangups[0] == "hup", "the program never got SIGHUP"
    hup_at = float(hangups[1])
    # SIGHUP soon after the client left; the end only after the grace.
    assert hup_at - gone_at < 5
    assert gone >= grace * 0.9
    line = session_line(daemon, "ready")
    assert "status=137" in line and "outcome=client hung up" in line
    child.close(force=True)


# --- sessions do not stall one another -------------------------------------------------


def test_a_client_that_stops_reading_does_not_delay_another_session(daemon):
    stalled = subprocess.Popen(
        [CAPSUDO, "-S", daemon.socket, "-i", "--", "yes"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE
    )
    try:
        time.sleep(0.5)  # long enough for the pipe, and the pty behind it, to fill
        assert stalled.poll() is None
        for _ in range(3):
            start = time.monotonic()
            result = capsudo(daemon.socket, "-i", "--", "echo", "through", stdin=subprocess.DEVNULL, timeout=15)
            assert result.stdout == b"through\r\n"
            assert time.monotonic() - start < 5
    finally:
        stalled.kill()
        stalled.wait()
        stalled.stdout.close()


def test_a_terminal_nobody_reads_does_not_delay_another_session(daemon):
    stalled = spawn_client(daemon.socket, "--", "yes")
    try:
        stalled.expect_exact("y\r\n")  # it runs; from now on nobody reads its terminal
        time.sleep(0.5)
        child = spawn_client(daemon.socket, "--", "sh", "-c", 'printf "name? "; read x; echo "hello $x"')
        child.expect_exact("name? ")
        child.sendline("second")
        child.expect_exact("hello second")
        assert finish(child) == 0
    finally:
        stalled.close(force=True)


@pytest.mark.parametrize("mode", ["-i", "-n"])
def test_signal_to_the_client_hangs_up_the_program_in_both_kinds_of_session(daemon_factory, sock_dir, mode):
    daemon = daemon_factory("--hangup-grace", "1")
    record = f"{sock_dir}/hangups"
    client = subprocess.Popen(
        [CAPSUDO, "-S", daemon.socket, mode, "--", "sh", "-c", HANGUP_RECORDER.format(log=record)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
    )
    try:
        line = client.stdout.readline()
        assert line.startswith(b"ready "), line
        program = int(line.split()[1])
        client.send_signal(signal.SIGTERM)
        status = client.wait(10)
        # Killed by it, or (interactive: after restoring the terminal) exited as if killed.
        assert status in (-signal.SIGTERM, 128 + signal.SIGTERM)
        wait_gone(program, timeout=15)
        assert open(record).read().startswith("hup "), "the program never got SIGHUP"
        assert "status=137" in session_line(daemon, "ready")
    finally:
        client.kill()
        client.wait()
        client.stdout.close()


class HangingFileSystem:
    """A FUSE file system served here, with one file, `sink`, whose writes
    are never answered: the file system of a client that wants to freeze
    whoever writes to it. Closing the device fails what is pending."""

    IN_HEADER = struct.Struct("IIQQIIIHH")
    OUT_HEADER = struct.Struct("IiQ")
    LOOKUP, GETATTR, OPEN, RELEASE, FLUSH, INIT, WRITE, INTERRUPT = 1, 3, 14, 18, 25, 26, 16, 36
    FOPEN_DIRECT_IO = 1
    SINK_NODE = 2

    def __init__(self, mountpoint: str) -> None:
        self.mountpoint = mountpoint
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.device = os.open("/dev/fuse", os.O_RDWR)
        options = f"fd={self.device},rootmode=40000,user_id=0,group_id=0".encode()
        if self.libc.mount(b"capsudo-test", mountpoint.encode(), b"fuse", 0, options) != 0:
            os.close(self.device)
            pytest.skip(f"cannot mount a FUSE file system: {os.strerror(ctypes.get_errno())}")
        self.writes_held = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _attr(self, node: int) -> bytes:
        mode = 0o40755 if node == 1 else 0o100666
        # ino size blocks atime mtime ctime (nsecs) mode nlink uid gid rdev blksize flags
        return struct.pack("QQQQQQIIIIIIIIII", node, 0, 0, 0, 0, 0, 0, 0, 0, mode, 1, 0, 0, 0, 4096, 0)

    def _reply(self, unique: int, body: bytes = b"", error: int = 0) -> None:
        try:
            os.write(self.device, self.OUT_HEADER.pack(self.OUT_HEADER.size + len(body), -error, unique) + body)
        except OSError:
            pass  # the request was interrupted or the connection is gone

    def _serve(self) -> None:
        while not self.stopping.is_set():
            # Polled, so that close() can stop this thread before it closes
            # the device (a read blocked on it would never return).
            if not select.select([self.device], [], [], 0.05)[0]:
                continue
            try:
                request = os.read(self.device, 1 << 21)
            except OSError:
                return  # unmounted
            _, opcode, unique, node, *_ = self.IN_HEADER.unpack_from(request)
            payload = request[self.IN_HEADER.size :]
            if opcode == self.INIT:
                major, minor, readahead, flags = struct.unpack_from("IIII", payload)
                # major minor max_readahead flags max_background congestion max_write time_gran, then zeros
                self._reply(unique, struct.pack("IIIIHHII", 7, 31, readahead, 0, 16, 12, 1 << 17, 1) + bytes(32))
            elif opcode == self.LOOKUP:
                if payload.rstrip(b"\0") == b"sink":
                    # nodeid generation entry_valid attr_valid (nsecs), attr: nothing cached
                    entry = struct.pack("QQQQII", self.SINK_NODE, 1, 0, 0, 0, 0)
                    self._reply(unique, entry + self._attr(self.SINK_NODE))
                else:
                    self._reply(unique, error=errno.ENOENT)
            elif opcode == self.GETATTR:
                self._reply(unique, struct.pack("QII", 0, 0, 0) + self._attr(node))
            elif opcode == self.OPEN:
                self._reply(unique, struct.pack("QIi", 1, self.FOPEN_DIRECT_IO, 0))
            elif opcode == self.WRITE:
                self.writes_held += 1  # never answered
            elif opcode in (self.FLUSH, self.RELEASE):
                self._reply(unique)
            elif opcode == self.INTERRUPT:
                pass
            else:
                self._reply(unique, error=errno.ENOSYS)

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(10)
        os.close(self.device)  # aborts the connection: held writes fail
        self.libc.umount2(self.mountpoint.encode(), 2)  # MNT_DETACH


@pytest.mark.root
def test_a_client_output_file_that_never_takes_a_write_does_not_stall_other_sessions(daemon, sock_dir):
    if not os.path.exists("/dev/fuse"):
        pytest.skip("no /dev/fuse")
    mountpoint = f"{sock_dir}/mnt"
    os.mkdir(mountpoint)
    filesystem = HangingFileSystem(mountpoint)
    stalled = None
    try:
        sink = os.open(f"{mountpoint}/sink", os.O_WRONLY)
        try:
            stalled = subprocess.Popen(
                [CAPSUDO, "-S", daemon.socket, "-i", "--", "sh", "-c", "echo into-the-file; exec sleep 100"],
                stdin=subprocess.DEVNULL, stdout=sink,
            )
        finally:
            os.close(sink)
        deadline = time.monotonic() + 10
        while filesystem.writes_held == 0:
            assert time.monotonic() < deadline, "the daemon never wrote to the file"
            time.sleep(0.02)
        for _ in range(3):
            start = time.monotonic()
            result = capsudo(daemon.socket, "-i", "--", "echo", "through", stdin=subprocess.DEVNULL, timeout=15)
            assert result.stdout == b"through\r\n"
            assert time.monotonic() - start < 5
        assert stalled.poll() is None
    finally:
        filesystem.close()
        if stalled is not None:
            stalled.kill()
            stalled.wait()
