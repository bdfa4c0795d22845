"""A model of one session, explored by hypothesis against the daemon's real session code.

Each run is one session: serve_session in a thread of its own, on one end of
a real socketpair (UnixChannel, descriptors as SCM_RIGHTS), and the model on
the other end, as a client that sends handshake messages in any order,
delegates real pipes, ends the handshake or not, then lets the program
finish, closes its stdin, kills it, or hangs up. The program is a shell that
reports its pid, its open descriptors, its command line and environment as
the kernel sees them (/proc), then waits for a line on stdin to exit with.

Checked at every step, for every endpoint (-f and -E on or off):
- no program runs before End: the daemon has no child and nothing was
  written to the delegated stdout;
- a session that ran a program gets exactly one Exit, with the program's
  status, and nothing after it (before it, a note when the pins dropped
  what the client asked); a refused one gets an Error and Exit(1);
- the program's command line is the pinned one, plus the client's arguments
  unless -f; its environment is the daemon's entries over the client's,
  or the daemon's alone with -E;
- the program holds descriptors 0, 1 and 2 and nothing else of the
  daemon's, though the daemon holds an inheritable descriptor on purpose;
- a hang-up ends the program, and when the session is over no child is left
  and no descriptor the session took is still open.
"""

from __future__ import annotations

import array
import os
import select
import signal
import socket
import threading
import time

import pytest
import trio
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from capsudo.core import CALLER_ENTRIES, Policy, SessionLimits, serve_session
from capsudo.proto import (NOTE_PREFIX, Arg, ControlDecoder, End, Env, Error, Exit, Fd, Secret, SessionKind,
                           SessionType, Winsize, encode_message)
from capsudo.transport import UnixChannel

pytestmark = pytest.mark.slow

# One line for sh -c, absolute paths so a client's PATH cannot change what
# reports. The '#' lines cannot be confused with arguments (no '#' in them).
REPORT = (
    "echo '#pid' $$; echo '#fds'; /bin/ls -1 /proc/$$/fd; "
    "echo '#cmdline'; /bin/tr '\\0' '\\n' < /proc/$$/cmdline; "
    "echo '#environ'; /bin/tr '\\0' '\\n' < /proc/$$/environ; "
    "echo '#ready'; read code; exit \"${code:-99}\""
)
PINNED = ("/bin/sh", "-c", REPORT, "model")
DAEMON_ENVIRONMENT = {"PINNED": "daemon", "LANG": "C"}
LIMITS = SessionLimits(handshake_timeout=60, max_items=8, max_bytes=512, hangup_grace=1.0)
# Generous: two shared cores, other tests running.
WAIT = 20.0

words = st.text(st.sampled_from("abcxyz0189 -_=./:"), max_size=12)
env_keys = st.sampled_from(["PINNED", "LANG", "FOO", "PATH", "TERM"])


def _children() -> set[int]:
    """Every child of this process, whichever of its threads started it."""
    found: set[int] = set()
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/children") as listing:
                found.update(int(pid) for pid in listing.read().split())
        except FileNotFoundError:
            pass
    return found


def _open_descriptors() -> set[int]:
    found = set()
    for fd in map(int, os.listdir("/proc/self/fd")):
        try:
            os.fstat(fd)  # the listing's own descriptor is closed by now
        except OSError:
            continue
        found.add(fd)
    return found


def _readable(fd: int, timeout: float) -> bool:
    return bool(select.select([fd], [], [], timeout)[0])


class DaemonThread:
    """serve_session on its own trio loop, as capsudod runs it for one connection."""

    def __init__(self, sock: socket.socket, policy: Policy) -> None:
        self.record = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(sock, policy), daemon=True)
        self._thread.start()

    def _run(self, sock: socket.socket, policy: Policy) -> None:
        async def serve():
            channel = UnixChannel(sock)
            self.record = await serve_session(channel, policy, LIMITS)

        try:
            trio.run(serve)
        except BaseException as exc:  # reported by the model, not lost in a thread
            self.error = exc

    def join(self) -> None:
        self._thread.join(WAIT)
        assert not self._thread.is_alive(), "the session did not end"
        assert self.error is None, f"serve_session raised {self.error!r}"


class SessionModel(RuleBasedStateMachine):
    @initialize(fixed_arguments=st.booleans(), fixed_environment=st.booleans(), on_a_terminal=st.booleans())
    def start_session(self, fixed_arguments, fixed_environment, on_a_terminal):
        self.policy = Policy(PINNED, fixed_arguments, fixed_environment, DAEMON_ENVIRONMENT)
        # A descriptor of the daemon's that a careless spawn would hand on.
        self.daemon_secret = os.open("/dev/null", os.O_RDONLY)
        os.set_inheritable(self.daemon_secret, True)
        self.descriptors_before = _open_descriptors()
        # Other tests in this process may have children of their own.
        self.children_before = _children()

        self.client, daemon_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.client.settimeout(WAIT)
        self.stdin_read, self.stdin_write = os.pipe()
        self.stdout_read, self.stdout_write = os.pipe()
        self.stderr_read, self.stderr_write = os.pipe()
        self.daemon = DaemonThread(daemon_end, self.policy)

        self.phase = "handshake"
        self.args: list[str] = []
        self.env_entries: list[str] = []
        self.items = self.size = 0
        self.delegated = False
        self.interactive = False
        self.program_pid: int | None = None
        if on_a_terminal:
            # Half the sessions start by asking for a terminal; any later
            # SessionType may still change that.
            self.send_session_type(SessionKind.INTERACTIVE)

    # -- the client's side of the wire -----------------------------------

    def _session_children(self) -> set[int]:
        return _children() - self.children_before

    def _send(self, message, fds=()) -> None:
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        self.client.sendmsg([encode_message(message)], ancillary)

    def _replies_until_close(self) -> list:
        decoder = ControlDecoder()
        while True:
            try:
                data = self.client.recv(65536)
            except ConnectionResetError:
                data = b""
            if not data:
                break
            decoder.feed(data)
        replies = list(decoder.messages())
        assert decoder.at_boundary, "the daemon's reply was cut"
        return replies

    def _expect_refusal(self) -> None:
        replies = self._replies_until_close()
        assert [type(m) for m in replies] == [Error, Exit], replies
        assert replies[1].status == 1
        self._finish_session()
        assert self.program_pid is None and self.daemon.record.status == 1
        event("refused")
        self.phase = "done"

    def _finish_session(self) -> None:
        self.client.close()
        self.daemon.join()

    # -- handshake -------------------------------------------------------

    def _counted(self, message, fds=()) -> bool:
        """Send a message before End; True when the model says the daemon refuses it.

        Every message counts against max_bytes, not only Arg and Env.
        """
        self.size += len(message.payload())
        self._send(message, fds)
        if self.size > LIMITS.max_bytes:
            self._expect_refusal()
            return True
        return False

    def _item(self, message, payload_size: int) -> bool:
        """Send an Arg or Env; True when the model says the daemon refuses it."""
        self.items += 1
        if self.items > LIMITS.max_items:
            self._send(message)
            self._expect_refusal()
            return True
        return self._counted(message)

    @precondition(lambda self: self.phase == "handshake")
    @rule(value=words)
    def send_arg(self, value):
        if not self._item(Arg(value), len(value.encode())):
            self.args.append(value)

    @precondition(lambda self: self.phase == "handshake")
    @rule(key=env_keys, value=words)
    def send_env(self, key, value):
        entry = f"{key}={value}"
        if not self._item(Env(entry), len(entry.encode())):
            self.env_entries.append(entry)

    @precondition(lambda self: self.phase == "handshake")
    @rule(kind=st.sampled_from(SessionKind))
    def send_session_type(self, kind):
        if self._counted(SessionType(kind)):
            return
        # The last one wins; Auto is the client's to resolve, and means plain here.
        self.interactive = kind is SessionKind.INTERACTIVE

    @precondition(lambda self: self.phase != "done")
    @rule(rows=st.integers(0, 300), cols=st.integers(0, 300))
    def send_winsize(self, rows, cols):
        if self.phase == "handshake":
            self._counted(Winsize(rows, cols))
        else:
            self._send(Winsize(rows, cols))

    @precondition(lambda self: self.phase == "handshake")
    @rule(secret=st.binary(max_size=16))
    def send_secret(self, secret):
        self._counted(Secret(secret))  # a daemon has no use for it and ignores it, but counts it

    @precondition(lambda self: self.phase == "handshake" and not self.delegated)
    @rule()
    def delegate_stdio(self):
        if not self._counted(Fd(3), [self.stdin_read, self.stdout_write, self.stderr_write]):
            self.delegated = True

    @precondition(lambda self: self.phase == "handshake" and self.delegated)
    @rule()
    def send_end(self):
        # Nothing ran before End, however long the handshake took.
        assert not self._session_children()
        assert not _readable(self.stdout_read, 0), "the program wrote before End"
        self._send(End())
        self._read_report()
        event("program started on a terminal" if self.interactive else "program started")
        self.phase = "running"

    # One rule for every way out of the handshake but End, so that together
    # they are drawn no more often than End is.
    @precondition(lambda self: self.phase == "handshake")
    @rule(breach=st.one_of(
        st.tuples(st.just("wrong count"), st.sampled_from([0, 1, 2, 4])),
        st.tuples(st.just("unknown type"), st.sampled_from([0, 10, 254, 256])),
        st.tuples(st.just("daemon's message"), st.sampled_from([Exit(0), Error("x")])),
        st.tuples(st.just("delegate twice"), st.none()),
        st.tuples(st.just("end without stdio"), st.none()),
        st.tuples(st.just("leave"), st.none()),
    ))
    def leave_the_handshake_otherwise(self, breach):
        what, value = breach
        if what == "leave":
            self._finish_session()
            assert self.daemon.record.outcome == "client left before End"
            event("left before End")
            self.phase = "done"
            return
        if what == "wrong count":
            descriptors = [os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC) for _ in range(value)]
            try:
                self._send(Fd(value), descriptors)
            finally:
                for fd in descriptors:
                    os.close(fd)
        elif what == "unknown type":
            self.client.sendall(value.to_bytes(4, "little") + (0).to_bytes(4, "little"))
        elif what == "daemon's message":
            self._send(value)
        elif what == "end without stdio" and not self.delegated:
            assert not self._session_children()
            self._send(End())
        else:  # delegated twice (or End asked for after delegating: delegate again instead)
            for _ in range(1 if self.delegated else 2):
                self._send(Fd(3), [self.stdin_read, self.stdout_write, self.stderr_write])
        self._expect_refusal()

    # -- the program -----------------------------------------------------

    def _read_report(self) -> None:
        output = b""
        deadline = time.monotonic() + WAIT
        # A terminal ends lines with CR LF.
        while not output.replace(b"\r\n", b"\n").endswith(b"#ready\n"):
            remaining = deadline - time.monotonic()
            assert remaining > 0 and _readable(self.stdout_read, remaining), (
                f"no report from the program: {output!r}, stderr {self._stderr()!r}"
            )
            chunk = os.read(self.stdout_read, 65536)
            assert chunk, f"stdout closed early: {output!r}, stderr {self._stderr()!r}"
            output += chunk
        sections: dict[str, list[str]] = {}
        for line in output.decode().splitlines():
            if line.startswith("#"):
                name, _, rest = line[1:].partition(" ")
                sections[name] = [rest] if rest else []
                current = sections[name]
            else:
                current.append(line)
        self.program_pid = int(sections["pid"][0])
        assert self.program_pid in self._session_children()

        assert sorted(sections["fds"], key=int) == ["0", "1", "2"], sections["fds"]
        expected_argv = list(PINNED) + ([] if self.policy.fixed_arguments else self.args)
        assert sections["cmdline"] == expected_argv
        expected_env = {} if self.policy.fixed_environment else dict(e.split("=", 1) for e in self.env_entries)
        expected_env.update(DAEMON_ENVIRONMENT)
        # The daemon's word on who asked replaces whatever the client sent under those names.
        observed = dict(e.split("=", 1) for e in sections["environ"])
        assert observed["CAPSUDO_UID"] == str(os.getuid())
        for name in CALLER_ENTRIES:
            expected_env.pop(name, None)
            observed.pop(name, None)
        assert observed == expected_env

    def _stderr(self) -> bytes:
        return os.read(self.stderr_read, 65536) if _readable(self.stderr_read, 0) else b""

    def _expect_exit(self, status: int) -> None:
        replies = self._replies_until_close()
        # Exactly one Exit, the program's status, and nothing after it; before
        # it at most one note, which a session whose arguments the pins dropped has.
        *notes, last = replies or [None]
        assert last == Exit(status), (replies, self._stderr())
        assert len(notes) <= 1 and all(isinstance(note, Error) and note.text.startswith(NOTE_PREFIX)
                                       for note in notes), replies
        if self.policy.fixed_arguments and self.args:
            assert notes, f"arguments {self.args} were dropped without a note: {replies}"
        self._finish_session()
        if self.interactive:
            # What the terminal echoed of our input was relayed before Exit.
            while _readable(self.stdout_read, 0):
                os.read(self.stdout_read, 65536)
        assert self.daemon.record.status == status
        assert self.daemon.record.argv == list(PINNED) + ([] if self.policy.fixed_arguments else self.args)
        event("ran a program")
        self.phase = "done"

    @precondition(lambda self: self.phase == "running")
    @rule(status=st.integers(0, 255))
    def program_exits(self, status):
        os.write(self.stdin_write, f"{status}\n".encode())
        self._expect_exit(status)

    @precondition(lambda self: self.phase == "running")
    @rule()
    def close_program_stdin(self):
        os.close(self.stdin_write)
        self.stdin_write = None
        self._expect_exit(99)

    @precondition(lambda self: self.phase == "running")
    @rule(signum=st.sampled_from([signal.SIGTERM, signal.SIGKILL]))
    def program_killed(self, signum):
        os.kill(self.program_pid, signum)
        self._expect_exit(128 + signum)

    @precondition(lambda self: self.phase == "running")
    @rule()
    def client_hangs_up(self):
        self._finish_session()
        assert self.daemon.record.outcome == "client hung up"
        event("hung up while running")
        self.phase = "done"

    @precondition(lambda self: self.phase == "done")
    @rule()
    def after_the_end(self):
        # The session is over: nothing of it is left running or writing.
        assert not self._session_children()
        assert not _readable(self.stdout_read, 0)

    # -- always ----------------------------------------------------------

    @invariant()
    def daemon_alive_or_done(self):
        assert self.daemon.error is None, f"serve_session raised {self.daemon.error!r}"

    @invariant()
    def nothing_runs_during_the_handshake(self):
        if self.phase == "handshake":
            assert not self._session_children()
            assert not _readable(self.stdout_read, 0)

    def teardown(self):
        if not hasattr(self, "daemon"):
            return
        if self.phase != "done":
            self._finish_session()  # a hang-up, whatever the phase
        assert not self._session_children(), "a program outlived its session"
        for fd in (self.stdin_read, self.stdin_write, self.stdout_write, self.stderr_write):
            if fd is not None:
                os.close(fd)
        # Every copy of stdout the session had is closed: end-of-file, and
        # after End only what the program wrote before it ended.
        assert _readable(self.stdout_read, WAIT)
        leftover = os.read(self.stdout_read, 65536)
        if self.program_pid is None:
            assert leftover == b"", "a program wrote though none was to run"
        os.close(self.stdout_read)
        os.close(self.stderr_read)
        os.close(self.daemon_secret)
        assert _open_descriptors() == self.descriptors_before - {self.daemon_secret}


SessionModel.TestCase.settings = settings(
    max_examples=80,
    stateful_step_count=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_session_model = SessionModel.TestCase
