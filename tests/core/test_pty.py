"""The daemon-side pty: open_pty_program driven directly, without a daemon.

The client's descriptors are stood in for by pipes, sockets and files made
here; the tests read what the program wrote where a client would.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import threading
import time

import pytest
import trio

from capsudo.core import _pty
from capsudo.core._pty import open_pty_program
from capsudo.core._relay_views import PlainRelayView, RelayView, SocketRelayView, ThreadedRelayView, open_relay_view
from capsudo.core._spawn import SpawnError
from capsudo.proto import Winsize

SH = shutil.which("sh")


class Drain:
    """Reads a descriptor to its end in a thread, like a client's terminal would."""

    def __init__(self, fd: int, delay: float = 0.0) -> None:
        self.fd = fd
        self.data = bytearray()
        self.delay = delay
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            if self.delay:
                time.sleep(self.delay)
            chunk = os.read(self.fd, 65536)
            if not chunk:
                break
            self.data += chunk
        os.close(self.fd)

    def result(self, timeout: float = 10.0) -> bytes:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the output never reached end-of-file"
        return bytes(self.data)


async def _append(results: list, awaitable) -> None:
    results.append(await awaitable)


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


async def run(
    script: str,
    stdin: bytes | None = b"",
    winsize: Winsize | None = None,
    argv0: str = "sh",
) -> tuple[int, bytes]:
    """Run `sh -c script` on a pty with pipes as the client's descriptors.

    stdin: what the client types, then end-of-file (None: the client's
    stdin stays open and silent).
    """
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    if stdin is not None:
        os.write(in_w, stdin)
        os.close(in_w)
    drain = Drain(out_r)
    try:
        async with open_pty_program(SH, [argv0, "-c", script], {"PATH": os.environ["PATH"]}, [in_r, out_w, out_w], winsize) as program:
            os.close(in_r)
            os.close(out_w)
            in_r = out_w = -1
            with trio.fail_after(20):
                status = await program.wait()
    finally:
        for fd in (in_r, out_w) + ((in_w,) if stdin is None else ()):
            if fd >= 0:
                os.close(fd)
    return status, drain.result()


async def test_output_is_relayed_completely():
    status, output = await run("seq 1 100000")
    assert status == 0
    lines = output.split(b"\r\n")
    assert lines[-1] == b""
    assert lines[:-1] == [str(n).encode() for n in range(1, 100001)]


@pytest.mark.parametrize("script, status", [("exit 0", 0), ("exit 3", 3), ("kill -9 $$", 137), ("kill -TERM $$", 143)])
async def test_status(script, status):
    assert (await run(script))[0] == status


async def test_the_program_has_the_terminal_and_nothing_else():
    script = (
        "[ -t 0 ] && [ -t 1 ] && [ -t 2 ] && echo terminals; "
        "echo sid=$(ps -o sid= -p $$ | tr -d ' ') pid=$$; "
        "echo tpgid=$(ps -o tpgid= -p $$ | tr -d ' '); "
        "echo fds:; ls /proc/$$/fd; "
        "echo to-stderr >&2"
    )
    status, output = await run(script)
    text = output.decode()
    assert status == 0
    assert "terminals" in text
    fields = dict(word.split("=") for line in text.splitlines() for word in line.split() if "=" in word)
    assert fields["sid"] == fields["pid"] == fields["tpgid"]  # its own session, in the foreground
    listed = text.split("fds:\r\n")[1].split("\r\n")[0]
    assert listed.split() == ["0", "1", "2"]  # no descriptor but the terminal
    assert "to-stderr" in text  # stderr folds into the terminal


async def test_argv0_is_kept():
    status, output = await run('echo "$0"', argv0="my-name")
    assert output == b"my-name\r\n"


@pytest.mark.parametrize("winsize, expected", [(None, b"24 80"), (Winsize(30, 100, 640, 480), b"30 100")])
async def test_initial_size(winsize, expected):
    assert (await run("stty size", winsize=winsize))[1] == expected + b"\r\n"


async def test_resize_signals_the_program_and_does_not_end_the_session():
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    drain = Drain(out_r)
    script = 'trap "stty size" WINCH; echo ready; while :; do read -r line && [ "$line" = stop ] && exit 7; done'
    statuses = []
    async with open_pty_program(SH, ["sh", "-c", script], {}, [in_r, out_w, out_w], Winsize(24, 80)) as program:
        os.close(in_r)
        os.close(out_w)
        async with trio.open_nursery() as nursery:
            # wait() runs the relay, as the daemon's session does from the start.
            nursery.start_soon(lambda: _append(statuses, program.wait()))
            with trio.fail_after(5):
                while b"ready" not in drain.data:
                    await trio.sleep(0.01)
            for rows, cols in ((40, 132), (50, 100)):
                program.resize(Winsize(rows, cols))
                expected = f"{rows} {cols}".encode()
                with trio.fail_after(5):
                    while expected not in drain.data:
                        await trio.sleep(0.01)
            os.write(in_w, b"stop\n")
            with trio.fail_after(5):
                while not statuses:
                    await trio.sleep(0.01)
    assert statuses == [7]
    os.close(in_w)
    assert b"40 132" in drain.result() and b"50 100" in drain.data


async def test_end_of_input_reaches_the_program():
    status, output = await run("cat", stdin=b"hi\n")
    assert status == 0
    assert output == b"hi\r\nhi\r\n"  # the terminal's echo, then cat's copy


async def test_end_of_input_after_a_partial_line():
    status, output = await run("cat; echo end", stdin=b"no newline")
    assert status == 0
    assert output.endswith(b"no newline\r\nend\r\n") or output.endswith(b"no newlineend\r\n")


async def test_end_of_input_when_stdin_is_empty():
    assert await run("cat; echo after", stdin=b"") == (0, b"after\r\n")


async def test_a_background_grandchild_does_not_keep_the_session_open():
    started = time.monotonic()
    # The subshell ignores the hang-up the kernel sends when the program exits,
    # and keeps the terminal open.
    status, output = await run('(trap "" HUP; exec sleep 30) & sleep 0.3; echo done; exit 4')
    elapsed = time.monotonic() - started
    assert (status, output) == (4, b"done\r\n")
    assert elapsed < 0.3 + _pty.DRAIN_BOUND + 0.5


async def test_a_grandchild_that_keeps_writing_does_not_keep_the_session_open():
    started = time.monotonic()
    status, output = await run('(trap "" HUP; while :; do echo spam || exit; done) & sleep 0.3; echo done')
    elapsed = time.monotonic() - started
    assert status == 0
    assert b"done\r\n" in output
    # Left alone, the spam would hold the session forever: the bound is the
    # drain's, with room for a loop that competes for the CPU on a busy machine.
    assert elapsed < 0.3 + _pty.DRAIN_BOUND + 3.0


async def test_slow_client_loses_nothing_even_after_the_program_exited():
    # The client takes its output slowly: the relay waits for it, and the
    # drain bound does not cut the tail off.
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    os.close(in_w)
    drain = Drain(out_r, delay=0.05)
    async with open_pty_program(SH, ["sh", "-c", "seq 1 60000"], {}, [in_r, out_w, out_w], None) as program:
        os.close(in_r)
        os.close(out_w)
        with trio.fail_after(30):
            assert await program.wait() == 0
    assert drain.result().split(b"\r\n")[-2] == b"60000"


async def test_client_descriptors_stay_blocking():
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    drain = Drain(out_r)
    async with open_pty_program(SH, ["sh", "-c", "read x; echo got $x"], {}, [in_r, out_w, out_w], None) as program:
        assert os.get_blocking(in_r) and os.get_blocking(out_w)
        os.write(in_w, b"it\n")
        assert await program.wait() == 0
        assert os.get_blocking(in_r) and os.get_blocking(out_w)
    for fd in (in_r, in_w, out_w):
        os.close(fd)
    assert drain.result().endswith(b"got it\r\n")


async def test_sockets_as_the_clients_descriptors():
    client_in, daemon_in = socket.socketpair()
    client_out, daemon_out = socket.socketpair()
    client_in.sendall(b"over a socket\n")
    client_in.shutdown(socket.SHUT_WR)
    drain = Drain(os.dup(client_out.fileno()))
    client_out.close()
    fds = [daemon_in.fileno(), daemon_out.fileno(), daemon_out.fileno()]
    async with open_pty_program(SH, ["sh", "-c", "cat"], {}, fds, None) as program:
        daemon_in.close()
        daemon_out.close()
        assert await program.wait() == 0
    client_in.close()
    assert drain.result() == b"over a socket\r\nover a socket\r\n"


async def test_regular_files_as_the_clients_descriptors(tmp_path):
    source = tmp_path / "in"
    source.write_bytes(b"".join(b"line %d\n" % n for n in range(2000)))
    sink = tmp_path / "out"
    in_fd = os.open(source, os.O_RDONLY)
    out_fd = os.open(sink, os.O_WRONLY | os.O_CREAT, 0o600)
    async with open_pty_program(SH, ["sh", "-c", "wc -l"], {}, [in_fd, out_fd, out_fd], None) as program:
        os.close(in_fd)
        os.close(out_fd)
        with trio.fail_after(10):
            assert await program.wait() == 0
    # The terminal echoes the input (the file is read at once, before any
    # `stty -echo` could run), then wc's count: every line reached it.
    output = sink.read_bytes()
    assert output.split(b"\r\n")[-2] == b"2000"
    assert output.count(b"line ") == 2000


async def test_dev_null_as_stdin_and_stdout():
    null = os.open(os.devnull, os.O_RDWR)
    async with open_pty_program(SH, ["sh", "-c", "cat; seq 1 1000; exit 5"], {}, [null, null, null], None) as program:
        os.close(null)
        with trio.fail_after(10):
            assert await program.wait() == 5


async def test_views_by_kind(tmp_path):  # closing a view tells trio's loop
    r, w = os.pipe()
    a, b = socket.socketpair()
    path = tmp_path / "f"
    path.write_bytes(b"")
    regular = os.open(path, os.O_RDONLY)
    null = os.open(os.devnull, os.O_RDONLY)
    views = []
    try:
        # A blocking pipe: the client's own description, left blocking, read in a thread once ready.
        views.append(open_relay_view(r, True))
        assert isinstance(views[-1], ThreadedRelayView) and views[-1]._pollable and views[-1].fd != r
        assert os.get_blocking(r)
        os.set_blocking(w, False)
        views.append(open_relay_view(w, False))  # made non-blocking by the client: used as it is
        assert type(views[-1]) is RelayView and views[-1].fd != w
        views.append(open_relay_view(a.fileno(), True))
        assert isinstance(views[-1], SocketRelayView) and os.get_blocking(a.fileno())
        views.append(open_relay_view(regular, True))
        assert isinstance(views[-1], ThreadedRelayView) and not views[-1]._pollable
        views.append(open_relay_view(null, True))
        assert isinstance(views[-1], PlainRelayView)
    finally:
        for view in views:
            view.close()
        for fd in (r, w, regular, null):
            os.close(fd)
        a.close()
        b.close()


@pytest.mark.parametrize("client_nonblocking", [True, False])
async def test_a_pipe_is_relayed_through_the_clients_own_description(monkeypatch, client_nonblocking):
    """The relay never opens the client's pipe again by name (that open()
    would have the daemon's privilege): it uses the client's description,
    as it is if already non-blocking, else with blocking calls in a thread;
    either way nothing is lost and nothing of the client's changes."""
    real_open = os.open
    reopened = []

    def record_proc(path, *args, **kwargs):
        if str(path).startswith("/proc/"):
            reopened.append(path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(_pty.os, "open", record_proc)
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    for fd in (in_r, out_w):
        os.set_blocking(fd, not client_nonblocking)
    view = open_relay_view(out_w, False)
    assert type(view) is (RelayView if client_nonblocking else ThreadedRelayView)
    view.close()
    drain = Drain(out_r, delay=0.01)  # slow: the pipe fills, writes meet EAGAIN
    script = "read x; echo got $x; seq 1 30000"
    async with open_pty_program(SH, ["sh", "-c", script], {}, [in_r, out_w, out_w], None) as program:
        os.write(in_w, b"x" * 20 + b"\n")
        with trio.fail_after(30):
            assert await program.wait() == 0
        assert os.get_blocking(out_w) is not client_nonblocking
    for fd in (in_r, in_w, out_w):
        os.close(fd)
    output = drain.result()
    assert output.split(b"\r\n")[-2] == b"30000"
    assert reopened == []


async def test_program_that_cannot_start(tmp_path):
    before = fd_count()
    null = os.open(os.devnull, os.O_RDWR)
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\0\1\2\3")
    garbage.chmod(0o755)
    with pytest.raises(SpawnError, match="Exec format error"):  # fails in the child, after the fork
        async with open_pty_program(str(garbage), ["garbage"], {}, [null, null, null], None):
            pass
    with pytest.raises(SpawnError, match="No such file or directory|Permission denied"):
        async with open_pty_program("/nonexistent/program", ["program"], {}, [null, null, null], None):
            pass
    not_executable = tmp_path / "not-executable"
    not_executable.write_text("#!/bin/sh\n")
    not_executable.chmod(0o644)
    with pytest.raises(SpawnError, match="Permission denied"):
        async with open_pty_program(str(not_executable), ["x"], {}, [null, null, null], None):
            pass
    os.close(null)
    assert fd_count() == before
    try:
        zombie = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        zombie = None
    assert zombie is None  # the child that failed to exec was reaped


async def test_a_descriptor_no_view_can_be_made_of_leaves_nothing_open(tmp_path):
    """An O_PATH descriptor of a socket file (which the handshake refuses
    before it gets here) passes fstat as a socket, then fails as one: the
    copy made for its view must be closed again."""
    listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listening.bind(str(tmp_path / "some.sock"))
    path_only = os.open(tmp_path / "some.sock", os.O_PATH)
    null = os.open(os.devnull, os.O_RDWR)
    try:
        before = fd_count()
        for _ in range(5):
            with pytest.raises(OSError):
                async with open_pty_program(SH, ["sh", "-c", "true"], {}, [path_only, null, null], None):
                    pass
        assert fd_count() == before
    finally:
        os.close(path_only)
        os.close(null)
        listening.close()


# Opens a pty program with so few descriptors to spare that it fails on the
# way (a view, the pty, the start), at each point in turn; prints the
# descriptors open before and after each attempt.
_STARVED = """
import os, resource, sys, trio
from capsudo.core._pty import open_pty_program
from capsudo.core._spawn import SpawnError

async def main():
    null = os.open(os.devnull, os.O_RDWR)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for spare in range(1, 10):
        before = os.listdir("/proc/self/fd")
        resource.setrlimit(resource.RLIMIT_NOFILE, (len(before) - 1 + spare, hard))
        try:
            async with open_pty_program("/bin/true", ["true"], {}, [null, null, null], None) as program:
                await program.wait()
            outcome = "ran"
        except (SpawnError, OSError) as exc:
            outcome = str(exc)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        print(spare, len(before), len(os.listdir("/proc/self/fd")), outcome, flush=True)

trio.run(main)
"""


def test_running_out_of_descriptors_half_way_leaves_nothing_open():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", _STARVED], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    attempts = [line.split(" ", 3) for line in result.stdout.splitlines()]
    assert len(attempts) == 9
    assert any(outcome != "ran" for *_, outcome in attempts) and attempts[-1][3] == "ran"
    for spare, before, after, outcome in attempts:
        assert before == after, f"{int(after) - int(before)} left open with {spare} to spare ({outcome})"


async def test_leaving_early_kills_the_program_group():
    null = os.open(os.devnull, os.O_RDWR)
    async with open_pty_program(SH, ["sh", "-c", "sleep 60 & sleep 60"], {}, [null, null, null], None) as program:
        os.close(null)
        await trio.sleep(0.2)
        pgid = program.pid
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # the orphaned sleep is reaped by init
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        await trio.sleep(0.02)
    pytest.fail("the program's process group outlived the session")


async def test_no_descriptor_leaks():
    await run("true")
    before = fd_count()
    for script in ("true", "seq 1 1000", "exit 3", "cat"):
        await run(script, stdin=b"x\n")
    assert fd_count() == before


async def test_silent_unpollable_stdin_does_not_hold_a_thread_after_its_session():
    """A pty master (a /dev/ptmx descriptor, which cannot be reopened by name)
    as the client's stdin gets blocking reads. Sessions whose client never
    typed must not leave a read behind them: more of them than trio's thread
    pool holds must not starve the next session's input."""
    terminals = [os.openpty() for _ in range(60)]
    try:
        for master, _ in terminals[:-1]:
            out_r, out_w = os.pipe()
            drain = Drain(out_r)
            async with open_pty_program(SH, ["sh", "-c", "exit 0"], {}, [master, out_w, out_w], None) as program:
                assert isinstance(program._source, ThreadedRelayView)
                os.close(out_w)
                with trio.fail_after(10):
                    assert await program.wait() == 0
            drain.result()
        master, slave = terminals[-1]
        os.write(slave, b"typed\n")
        out_r, out_w = os.pipe()
        drain = Drain(out_r)
        async with open_pty_program(SH, ["sh", "-c", 'read x; echo "got $x"'], {}, [master, out_w, out_w], None) as program:
            os.close(out_w)
            with trio.fail_after(10):
                assert await program.wait() == 0
        assert b"got typed" in drain.result()
        assert trio.to_thread.current_default_thread_limiter().borrowed_tokens == 0
    finally:
        for master, slave in terminals:
            os.close(master)
            os.close(slave)


# A session on a pty of its own: its leader in the foreground, a child moved
# to a process group of its own (so in the background); both pids printed.
_FOREGROUND_AND_BACKGROUND = """
import os, pty, sys, time
pid, master = pty.fork()
if pid == 0:
    background = os.fork()
    if background == 0:
        os.setpgid(0, 0)
        time.sleep(30)
        os._exit(0)
    os.setpgid(background, background)
    print(os.getpid(), background, flush=True)
    time.sleep(30)
    os._exit(0)
line = b""
while not line.endswith(b"\\n"):
    line += os.read(master, 100)
sys.stdout.write(line.decode().strip() + "\\n")
sys.stdout.flush()
time.sleep(30)
"""


def test_a_client_is_in_the_foreground_unless_stopped_or_in_the_background():
    import subprocess
    import sys

    from capsudo.core._pty import client_in_foreground

    loose = subprocess.Popen(["sleep", "30"], start_new_session=True)  # no terminal at all
    on_a_pty = subprocess.Popen([sys.executable, "-c", _FOREGROUND_AND_BACKGROUND], stdout=subprocess.PIPE)
    try:
        assert client_in_foreground(loose.pid)
        os.kill(loose.pid, signal.SIGSTOP)
        deadline = time.monotonic() + 5
        while client_in_foreground(loose.pid):
            assert time.monotonic() < deadline, "a stopped process counted as in the foreground"
            time.sleep(0.01)
        os.kill(loose.pid, signal.SIGCONT)
        assert client_in_foreground(loose.pid)

        leader, background = map(int, on_a_pty.stdout.readline().split())
        assert client_in_foreground(leader)
        assert not client_in_foreground(background)
    finally:
        for process in (loose, on_a_pty):
            process.kill()
            process.wait()
        if "background" in locals():
            for pid in (leader, background):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
    assert client_in_foreground(loose.pid)  # gone: /proc cannot tell, so reading goes on
