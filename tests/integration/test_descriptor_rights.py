"""A delegated descriptor carries exactly its own access, and a failed session leaves nothing behind.

An unprivileged user who may connect to an endpoint delegates descriptors
of files it may not read or write: O_PATH descriptors (which name a file and
grant nothing), or descriptors opened the other way round. Were the daemon
to open such a file again by name, through /proc/self/fd/N or as the
program's /dev/stdin, the open would have the daemon's privilege. Here the
files are FIFOs that only root may open; what root left in them must stay,
nothing may be written into them, and the client gets a one-line refusal.

The second half counts the daemon's descriptors across sessions that fail
in every way the bad-input suites know: none may stay behind, or enough
failed sessions would leave the daemon unable to serve anyone.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from pathlib import Path

import pytest

from capsudo.proto import (Arg, ControlFrame, Direction, End, FdsFrame, SessionKind, SessionType, StreamClose,
                           StreamData, encode_frame, lean)

from . import test_bad_input as unix_bad
from . import test_channel_bad_input as channel_bad
from .daemon_process import capsudo
from .delegating_client import INTERACTIVE, NON_INTERACTIVE, run_as, user_python
from .proxy_process import start_proxy

pytestmark = pytest.mark.root

ROOT_SECRET = b"only-root-may-read-this\n"
O_PATH_REFUSAL = "{} is an O_PATH descriptor, which carries no right to read or write"

# (session kind, pinned program, which descriptor is the FIFO's, what a well-behaved client sends and gets back)
ENDPOINTS = {
    "interactive-stdin": (INTERACTIVE, ["cat"], 0, "hello\n", "hello\r\nhello\r\n"),
    "interactive-stdout": (INTERACTIVE, ["echo", "written"], 1, "", "written\r\n"),
    "plain-stdin": (NON_INTERACTIVE, ["cat", "/dev/stdin"], 0, "hello\n", "hello\n"),
    # A pinned program that writes to /dev/stderr opens its stderr again by name.
    "plain-stderr": (NON_INTERACTIVE, ["sh", "-c", "echo written >/dev/stderr"], 2, "", "written\n"),
}
NAMES = ("stdin", "stdout", "stderr")


@pytest.fixture
def attacker(scratch_user, sock_dir):
    """The scratch user's Python, with sock_dir searchable (not writable) by it."""
    _, uid, gid = scratch_user
    os.chmod(sock_dir, 0o755)
    try:
        return user_python(uid, gid)
    except LookupError as exc:
        pytest.skip(str(exc))


class RootFifo:
    """A FIFO only root may open (mode `mode`, root's), held open by root for
    reading and writing so that opening it never waits for a peer."""

    def __init__(self, path: Path, mode: int = 0o600) -> None:
        self.path = path
        os.mkfifo(path)
        os.chmod(path, mode)
        self.holder = os.open(path, os.O_RDWR | os.O_NONBLOCK)

    def leftover(self) -> bytes:
        """What is in the FIFO now (and take it out)."""
        try:
            return os.read(self.holder, 65536)
        except BlockingIOError:
            return b""

    def close(self) -> None:
        os.close(self.holder)


@pytest.fixture
def root_fifo(sock_dir):
    made = []

    def make(name: str = "secret.fifo", mode: int = 0o600) -> RootFifo:
        fifo = RootFifo(Path(sock_dir) / name, mode)
        made.append(fifo)
        return fifo

    yield make
    for fifo in made:
        fifo.close()


def _specs(fifo_position: int, fifo_spec: str) -> list[str]:
    specs = ["pipe", "pipe", "pipe"]
    specs[fifo_position] = fifo_spec
    return specs


def _assert_well_behaved_session_served(attacker, socket_path: str, kind: int, stdin_data: str, expected: str):
    [served] = run_as(attacker, socket_path, kind, "pipe", "pipe", "pipe", stdin_data=stdin_data)
    assert served.replies == [[lean.EXIT, 0]], served
    assert served.output == expected


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_an_O_PATH_descriptor_of_a_root_only_FIFO_is_refused(daemon_factory, attacker, root_fifo, endpoint):
    kind, program, position, stdin_data, expected = ENDPOINTS[endpoint]
    daemon = daemon_factory("-m", "0777", "-f", "-E", "--", *program)
    fifo = root_fifo()
    os.write(fifo.holder, ROOT_SECRET)
    [outcome] = run_as(attacker, daemon.socket, kind, *_specs(position, f"path:{fifo.path}"))
    assert outcome.refusal == O_PATH_REFUSAL.format(NAMES[position]), outcome
    assert ROOT_SECRET.decode() not in outcome.output
    # Root's bytes are still there, and nothing was added to them.
    assert fifo.leftover() == ROOT_SECRET
    _assert_well_behaved_session_served(attacker, daemon.socket, kind, stdin_data, expected)
    assert f"outcome=refused: {O_PATH_REFUSAL.format(NAMES[position])}" in daemon.log()


@pytest.mark.parametrize("kind", [INTERACTIVE, NON_INTERACTIVE])
def test_a_write_only_descriptor_as_stdin_is_refused(daemon_factory, attacker, root_fifo, kind):
    # Anyone may write into this FIFO, only root may read it.
    fifo = root_fifo(mode=0o622)
    os.write(fifo.holder, ROOT_SECRET)
    program = ["cat"] if kind == INTERACTIVE else ["cat", "/dev/stdin"]
    daemon = daemon_factory("-m", "0777", "-f", "-E", "--", *program)
    [outcome] = run_as(attacker, daemon.socket, kind, f"wronly:{fifo.path}", "pipe", "pipe")
    assert outcome.refusal == "stdin is not open for reading", outcome
    assert fifo.leftover() == ROOT_SECRET
    _assert_well_behaved_session_served(attacker, daemon.socket, kind, "hello\n",
                                        "hello\r\nhello\r\n" if kind == INTERACTIVE else "hello\n")


def test_a_read_only_descriptor_as_stdout_is_refused(daemon_factory, attacker, root_fifo):
    # Anyone may read this FIFO, only root may write into it.
    fifo = root_fifo(mode=0o644)
    daemon = daemon_factory("-m", "0777", "-f", "-E", "--", "echo", "written")
    [outcome] = run_as(attacker, daemon.socket, INTERACTIVE, "pipe", f"rdonly:{fifo.path}", "pipe")
    assert outcome.refusal == "stdout is not open for writing", outcome
    assert fifo.leftover() == b""
    _assert_well_behaved_session_served(attacker, daemon.socket, INTERACTIVE, "", "written\r\n")


def test_through_a_unix_to_unix_proxy_an_O_PATH_descriptor_is_refused_at_the_proxy(
    daemon_factory, attacker, root_fifo, sock_dir
):
    daemon = daemon_factory("-f", "-E", "--", "cat")
    proxy = start_proxy(f"{sock_dir}/front.sock", f"unix://{daemon.socket}", "-m", "0777",
                        log_path=Path(sock_dir) / "proxy.log")
    try:
        fifo = root_fifo()
        os.write(fifo.holder, ROOT_SECRET)
        [outcome] = run_as(attacker, proxy.listen, INTERACTIVE, f"path:{fifo.path}", "pipe", "pipe")
        assert outcome.refusal == "capsudo-proxy: " + O_PATH_REFUSAL.format("stdin"), outcome
        assert fifo.leftover() == ROOT_SECRET
        _assert_well_behaved_session_served(attacker, proxy.listen, INTERACTIVE, "hello\n", "hello\r\nhello\r\n")
    finally:
        proxy.process.kill()
        proxy.process.wait()


# --- no descriptor outlives a failed session -----------------------------------


def _descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _settled(pid: int, expected: int | None = None, timeout: float = 5.0) -> int:
    """The descriptor count once it stops changing (or reaches `expected`)."""
    deadline = time.monotonic() + timeout
    previous = _descriptors(pid)
    while time.monotonic() < deadline:
        time.sleep(0.1)
        count = _descriptors(pid)
        if count == expected or (expected is None and count == previous):
            return count
        previous = count
    return previous


def test_failed_pty_sessions_leave_no_descriptor_behind_even_at_a_low_limit(daemon_factory, attacker, sock_dir):
    """The reported attack: an O_PATH descriptor of a socket file as stdin
    of an interactive session, many times, against a daemon with few
    descriptors to spare. Each failed session used to keep one."""
    import resource

    daemon = daemon_factory("-m", "0777", "-f", "-E", "--", "cat")
    pid = daemon.process.pid
    idle = _settled(pid)
    # Room for a few sessions at once, not for 150 lost descriptors.
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (idle + 12, resource.prlimit(pid, resource.RLIMIT_NOFILE)[1]))
    some_socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    some_socket.bind(f"{sock_dir}/some.sock")
    try:
        outcomes = run_as(attacker, daemon.socket, INTERACTIVE, f"path:{sock_dir}/some.sock", "pipe", "pipe",
                          repeat=150)
    finally:
        some_socket.close()
    assert all(outcome.refusal == O_PATH_REFUSAL.format("stdin") for outcome in outcomes), outcomes[-1]
    assert _settled(pid, idle) == idle
    _assert_well_behaved_session_served(attacker, daemon.socket, INTERACTIVE, "hello\n", "hello\r\nhello\r\n")


def _unix_cases(sock_dir: str):
    """Sessions on a Unix endpoint that fail, each in its own way; each
    checks its answer. From test_bad_input, and the ones of this file."""
    null = os.open(os.devnull, os.O_RDWR)
    path_of_socket = os.open(f"{sock_dir}/some.sock", os.O_PATH)
    write_only = os.open(os.devnull, os.O_WRONLY)
    bad_format = Path(sock_dir) / "bad-format"
    bad_format.write_bytes(b"\0\1\2\3")
    bad_format.chmod(0o755)

    def refused(fragment: str, *parts: bytes, fds=None, kind=lean.NON_INTERACTIVE, status: int = 1):
        def case(path: str) -> None:
            with unix_bad._connect(path) as sock:
                sock.sendall(b"".join(parts) + lean.session_type(kind))
                unix_bad._send_fds(sock, lean.fd(len(fds or [])) + lean.end(), fds or [])
                unix_bad._assert_refused(sock, fragment, status)
        return case

    def raw(data: bytes, fragment: str, fds=(), shutdown: bool = False):
        def case(path: str) -> None:
            with unix_bad._connect(path) as sock:
                unix_bad._send_fds(sock, data, list(fds))
                if shutdown:
                    sock.shutdown(socket.SHUT_WR)
                unix_bad._assert_refused(sock, fragment)
        return case

    def random_bytes(path: str) -> None:
        with unix_bad._connect(path) as sock:
            sock.sendall(os.urandom(4096))
            assert [kind for kind, _ in unix_bad._replies(sock)] == [lean.ERROR, lean.EXIT]

    stdio = [null, null, null]
    cases = [
        random_bytes,
        raw(unix_bad.HEADER.pack(lean.ARG, 16 * 1024 * 1024 + 1), "limit"),
        raw(lean.arg("echo")[:-2], "middle of a message", shutdown=True),
        raw(lean.fd(2) + lean.end(), "expected 3 descriptors", fds=[null, null]),
        raw(lean.fd(4) + lean.end(), "expected 3 descriptors", fds=[null] * 4),
        raw(lean.fd(3) + lean.end(), "Fd announced 3 descriptors but 0 arrived"),
        raw(lean.arg("echo") + lean.end(), "no descriptors were delegated", fds=[null]),
        raw(unix_bad.HEADER.pack(42, 0), "unknown message type 42"),
        raw(lean.message(lean.ARG, b"\xff\xfe"), "not valid UTF-8"),
        raw(lean.arg("ec\0ho"), "NUL"),
        raw(b"".join(lean.arg("x") for _ in range(101)), "too many arguments"),
        raw(lean.arg("x" * 60000) + lean.env("K=" + "y" * 60000), "the 100000 a client may send before End"),
        raw(lean.message(lean.EXIT, struct.pack("<i", 0)), "a client may not send Exit"),
        refused("stdin is an O_PATH descriptor", lean.arg("cat"), fds=[path_of_socket, null, null],
                kind=lean.INTERACTIVE),
        refused("stdin is an O_PATH descriptor", lean.arg("cat"), fds=[path_of_socket, null, null]),
        refused("stdin is not open for reading", lean.arg("cat"), fds=[write_only, null, null],
                kind=lean.INTERACTIVE),
        refused("unable to run no-such-program", lean.arg("no-such-program"), fds=stdio, status=127),
        refused("unable to run no-such-program", lean.arg("no-such-program"), fds=stdio, kind=lean.INTERACTIVE,
                status=127),
        # These fail after the fork: on a pty, once the views and the pty are open.
        refused("Exec format error", lean.arg(str(bad_format)), fds=stdio, kind=lean.INTERACTIVE, status=127),
        refused("Exec format error", lean.arg(str(bad_format)), fds=stdio, status=127),
    ]
    return cases, (null, path_of_socket, write_only)


def _control_messages_until_exit(sock: socket.socket) -> list[tuple[int, bytes]]:
    """The control messages on a channel up to Exit; the streams' frames are skipped.

    Leaving at the Exit, without closing the streams the daemon opened:
    the daemon must not keep anything of the session for that either.
    """
    data, controls = b"", []
    while not controls or controls[-1][0] != lean.EXIT:
        chunk = sock.recv(65536)
        assert chunk, f"closed before Exit: {controls}"
        data += chunk
        while len(data) >= channel_bad.FRAME_HEADER.size:
            kind, _, length = channel_bad.FRAME_HEADER.unpack(data[: channel_bad.FRAME_HEADER.size])
            end = channel_bad.FRAME_HEADER.size + length
            if len(data) < end:
                break
            if kind == channel_bad.CONTROL:
                body = data[channel_bad.FRAME_HEADER.size : end]
                message_type, message_length = channel_bad.CONTROL_HEADER.unpack(body[:8])
                controls.append((message_type, body[8 : 8 + message_length]))
            data = data[end:]
    return controls


def _channel_cases():
    """Sessions on a tcp:// endpoint that fail, from test_channel_bad_input."""

    def refused(data: bytes, fragment: str, shutdown: bool = False):
        def case(daemon) -> None:
            with channel_bad._connect(daemon) as sock:
                sock.sendall(data)
                if shutdown:
                    sock.shutdown(socket.SHUT_WR)
                channel_bad._assert_refused(sock, fragment)
        return case

    def cannot_run(kind: SessionKind):
        request = b"".join(encode_frame(frame) for frame in (
            ControlFrame(Arg("no-such-program")),
            ControlFrame(SessionType(kind)),
            FdsFrame(((0, Direction.READ), (2, Direction.WRITE), (4, Direction.WRITE))),
            ControlFrame(End()),
        ))

        def case(daemon) -> None:
            with channel_bad._connect(daemon) as sock:
                sock.sendall(request)
                controls = _control_messages_until_exit(sock)
            assert [kind for kind, _ in controls] == [lean.ERROR, lean.EXIT], controls
            assert "unable to run no-such-program" in lean.text(controls[0][1])
            assert lean.exit_status(controls[1][1]) == 127
        return case

    header = channel_bad.FRAME_HEADER
    return [
        # Noise that is no frame at all (a first byte no frame kind has).
        refused(b"\xff" + os.urandom(4095), "", shutdown=True),
        refused(header.pack(3, 0, 0xFFFFFFFF), "frame announces 4294967295 bytes"),
        refused(encode_frame(ControlFrame(Arg("cat"))) + encode_frame(StreamData(0, b"who am I?")),
                "StreamData for stream 0, which was never announced"),
        refused(encode_frame(StreamClose(6)), "StreamClose for stream 6, which was never announced"),
        refused(header.pack(channel_bad.FDS, 0, 5) + struct.pack("<IB", 0, 7), "unknown direction 7"),
        cannot_run(SessionKind.NON_INTERACTIVE),
        cannot_run(SessionKind.INTERACTIVE),
    ]


FAILED_SESSIONS = 1000


def test_a_thousand_failed_sessions_leave_the_daemons_descriptor_count_flat(
    daemon_factory, network_daemon_factory, sock_dir
):
    unix_daemon = daemon_factory("--handshake-timeout", "2", "--max-items", "100", "--max-bytes", "100000")
    tcp_daemon = network_daemon_factory("tcp://127.0.0.1:0")
    some_socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    some_socket.bind(f"{sock_dir}/some.sock")
    unix_cases, held = _unix_cases(sock_dir)
    channel_cases = _channel_cases()
    # Unix cases and channel cases in turn, each kind through all its cases.
    schedule = [(unix_daemon.socket, case) for case in unix_cases] + [(tcp_daemon, case) for case in channel_cases]
    try:
        for target, case in schedule:  # once each first: whatever a first session sets up stays
            case(target)
        pids = (unix_daemon.process.pid, tcp_daemon.process.pid)
        before = [_settled(pid) for pid in pids]
        started = time.monotonic()
        for number in range(FAILED_SESSIONS):
            target, case = schedule[number % len(schedule)]
            case(target)
        elapsed = time.monotonic() - started
        after = [_settled(pid, expected) for pid, expected in zip(pids, before)]
    finally:
        some_socket.close()
        for fd in held:
            os.close(fd)
    assert after == before
    assert elapsed < 60
    for daemon in (unix_daemon, tcp_daemon):
        served = capsudo(daemon.socket, "--", "echo", "served")
        assert (served.returncode, served.stdout) == (0, b"served\n"), served.stderr
