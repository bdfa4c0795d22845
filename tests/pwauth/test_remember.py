"""--remember against real PAM: a shell on a real terminal runs the client
twice, as a person at a prompt does; another terminal and a caller with no
terminal are asked all the same."""

from __future__ import annotations

import io
import re
import shlex
import subprocess
import time

import pytest

from .conftest import CAPSUDO, CLIENT_ENV, CLIENT_PACKAGES, as_user

pytestmark = [pytest.mark.root, pytest.mark.pam, pytest.mark.terminal]

REMEMBER = 3.0
PROMPT = "password: "


class Shell:
    """A user's sh on a pty of its own: the session leader, the pty its controlling terminal."""

    def __init__(self, user, client_program, socket_path):
        import pexpect

        self.user = user
        self.client = [*client_program, "-S", socket_path, "-n", "--", "/bin/sh", "-c", "echo ran-as-$(id -u)"]
        self.transcript = io.StringIO()
        self.child = pexpect.spawn("setpriv", [*as_user(user)[1:], "/bin/sh"],
                                   env={**CLIENT_ENV, "PS1": "$ "}, encoding="utf-8",
                                   codec_errors="replace", timeout=30, dimensions=(24, 80))
        self.child.logfile_read = self.transcript
        self.child.expect_exact("$ ")
        self.runs = 0

    def run(self) -> bool:
        """Run the client once, typing the password if asked; True if it asked."""
        self.runs += 1
        done = f"status-{self.runs}="
        self.child.sendline(f"{shlex.join(self.client)}; echo {done}$?")
        asked = self.child.expect([PROMPT, re.escape(done) + r"(\d+)"]) == 0
        if asked:
            self.child.sendline(self.user.password)
            self.child.expect(re.escape(done) + r"(\d+)")
        assert self.child.match.group(1) == "0", self.transcript.getvalue()
        # The typed line holds "$(id -u)": only the program's output says 0.
        assert "ran-as-0" in self.child.before, self.transcript.getvalue()
        self.child.expect_exact("$ ")
        return asked

    def close(self):
        self.child.close(force=True)


@pytest.fixture(scope="module")
def shell_client(users):
    """The client as a test user's shell can start it: setpriv may exec what
    a shell cannot (an interpreter under a directory closed to the user)."""
    boot = ("import sys; sys.path[:0] = %r; from capsudo.client import main; sys.exit(main())"
            % CLIENT_PACKAGES)
    for program in ([CAPSUDO], ["/usr/bin/python3", "-I", "-B", "-c", boot]):
        probe = [*as_user(users.alice), "/bin/sh", "-c", shlex.join([*program, "-h"])]
        if subprocess.run(probe, capture_output=True, env=CLIENT_ENV, timeout=30).returncode == 0:
            return program
    pytest.skip("no client a test user's shell can run")


@pytest.fixture
def shells(shell_client):
    client_program = shell_client
    opened = []

    def open_shell(user, socket_path) -> Shell:
        shell = Shell(user, client_program, socket_path)
        opened.append(shell)
        return shell

    yield open_shell
    for shell in opened:
        shell.close()


def run_without_terminal(user, client_program, socket_path) -> subprocess.CompletedProcess:
    """The client in a session of its own, with no controlling terminal and pipes for stdin and stdout."""
    return subprocess.run([*as_user(user), *client_program, "-S", socket_path, "-n", "--", "/bin/echo", "ran"],
                          stdin=subprocess.PIPE, capture_output=True, text=True, env=CLIENT_ENV,
                          start_new_session=True, timeout=30)


def test_the_same_terminal_is_not_asked_again_within_the_window(front_end, users, shells, client_program):
    front = front_end("--remember", f"{REMEMBER:g}s")
    front.wait_for_log("remembering a password")
    shell = shells(users.alice, front.socket)
    started = time.monotonic()
    assert shell.run(), "the first call asks"
    assert not shell.run(), "the second call from the same terminal session is let in"
    assert time.monotonic() - started < REMEMBER
    front.wait_for_log(rf"uid={users.alice.uid} pid=\d+ outcome=remembered detail=\"a ticket for tty=")

    # Another terminal of the same user is asked, and so is a caller with no terminal.
    assert shells(users.alice, front.socket).run(), "another terminal is asked"
    alone = run_without_terminal(users.alice, client_program, front.socket)
    assert alone.returncode == 1 and "no terminal to ask on" in alone.stderr, alone
    assert "ran" not in alone.stdout
    # Another user on no terminal of theirs gets nothing of alice's ticket.
    assert shells(users.bob, front.socket).run()

    # Once the window has passed since the password, the first terminal is asked again.
    time.sleep(max(0.0, started + REMEMBER + 0.3 - time.monotonic()))
    assert shell.run(), "asked again after the window"


def test_without_remember_every_call_is_asked(front_end, users, shells):
    front = front_end()
    shell = shells(users.alice, front.socket)
    assert shell.run()
    assert shell.run()
    assert "outcome=remembered" not in front.log()
