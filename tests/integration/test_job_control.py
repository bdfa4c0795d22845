"""^Z typed at a real terminal: a real bash runs capsudo against a real daemon.

The ^Z key (byte 0x1a) reaches the program's pty through the daemon; what is
checked is what the person at bash sees: the job reported stopped, the prompt
back and the terminal cooked, and after `fg` the program going on, in raw mode
again and at the window's present size.
"""

from __future__ import annotations

import os
import shutil
import termios
import time

import pexpect
import pytest

from .daemon_process import CAPSUDO

pytestmark = pytest.mark.terminal

EXPECT_TIMEOUT = 20
PROMPT = "bash-ready> "


def in_raw_mode(terminal: pexpect.spawn) -> bool:
    lflag = termios.tcgetattr(terminal.child_fd)[3]
    return not lflag & (termios.ICANON | termios.ECHO)


def wait_until(condition, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


@pytest.fixture
def bash():
    path = shutil.which("bash")
    if path is None:
        pytest.skip("bash is not installed")
    shell = pexpect.spawn(
        path, ["--norc", "--noprofile", "-i"], dimensions=(24, 80), timeout=EXPECT_TIMEOUT,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TERM": "xterm", "LANG": "C", "PS1": PROMPT},
    )
    shell.expect_exact(PROMPT)
    yield shell
    shell.close(force=True)


def settings(shell: pexpect.spawn) -> bytes:
    shell.sendline('echo "<<$(stty -g)>>"')
    shell.expect(r"<<([0-9a-f:]+)>>")
    value = shell.match.group(1)
    shell.expect_exact(PROMPT)
    return value


def test_ctrl_z_stops_sleep_and_fg_continues_it(daemon, bash):
    before = settings(bash)
    bash.sendline(f"{CAPSUDO} -S {daemon.socket} -- sh -c 'echo started; sleep 2; echo done-$((6 * 7))'")
    bash.expect_exact("started")
    wait_until(lambda: in_raw_mode(bash), "the client never made the terminal raw")
    bash.sendcontrol("z")
    bash.expect(r"Stopped")
    bash.expect_exact(PROMPT)
    assert settings(bash) == before
    bash.sendline("jobs")
    bash.expect(r"\[1\]\+\s+Stopped")
    bash.expect_exact(PROMPT)
    time.sleep(2.5)  # longer than the sleep: a program that kept running would be done by now
    bash.sendline("echo still-$((6 * 7))")
    bash.expect_exact("still-42")
    bash.expect_exact(PROMPT)
    assert b"done-42" not in bash.before
    bash.sendline("fg")
    bash.expect_exact("done-42")
    bash.expect_exact(PROMPT)
    bash.sendline('echo "status=$?"')
    bash.expect(r"status=(\d+)")
    assert bash.match.group(1) == b"0"
    assert settings(bash) == before


def test_ctrl_z_in_a_full_screen_program(daemon, bash):
    if shutil.which("less") is None:
        pytest.skip("less is not installed")
    bash.sendline(f"seq 1 500 > /tmp/capsudo-jc-{os.getpid()}; echo seq-written")
    bash.expect_exact("seq-written")
    bash.expect_exact(PROMPT)
    bash.sendline(f"{CAPSUDO} -S {daemon.socket} -- less /tmp/capsudo-jc-{os.getpid()}")
    bash.expect_exact("10\r\n")  # less's first screen
    wait_until(lambda: in_raw_mode(bash), "the client never made the terminal raw")
    bash.sendcontrol("z")
    bash.expect(r"Stopped")
    bash.expect_exact(PROMPT)
    # What is typed now is the shell's, not less's.
    bash.sendline("echo shell-has-$((6 * 7))")
    bash.expect_exact("shell-has-42")
    bash.expect_exact(PROMPT)
    bash.setwinsize(30, 100)
    bash.sendline("fg")
    # less is going again, at the new size: it moves on a page of 29 lines.
    bash.send(" ")
    bash.expect_exact("58\r\n")
    bash.send("q")
    bash.expect_exact(PROMPT)
    os.unlink(f"/tmp/capsudo-jc-{os.getpid()}")


def test_ctrl_c_still_reaches_the_program(daemon, bash):
    bash.sendline(f"{CAPSUDO} -S {daemon.socket} -- sh -c 'echo started; exec sleep 30'; echo status=$?")
    bash.expect_exact("started")
    wait_until(lambda: in_raw_mode(bash), "the client never made the terminal raw")
    bash.sendcontrol("c")
    bash.expect(r"status=(\d+)")
    assert bash.match.group(1) == b"130"


def test_ctrl_z_stops_a_job_whose_own_process_does_not_stop(daemon, bash):
    # sh catches SIGTSTP and waits on: only the sleep below it stops, as only
    # the child stops when ^Z comes while a shell vforks it. The monitor
    # waits for sh alone; the job is stuck all the same and must be reported.
    bash.sendline(
        f"{CAPSUDO} -S {daemon.socket} -- sh -c 'trap \"echo tstp-caught\" TSTP; echo started; sleep 2; echo done-$((6 * 7))'"
    )
    bash.expect_exact("started")
    wait_until(lambda: in_raw_mode(bash), "the client never made the terminal raw")
    bash.sendcontrol("z")
    bash.expect(r"Stopped")
    bash.expect_exact(PROMPT)
    time.sleep(2.5)  # longer than the sleep: a sleep that kept running would be done by now
    bash.sendline("echo still-$((6 * 7))")
    bash.expect_exact("still-42")
    bash.expect_exact(PROMPT)
    assert b"done-42" not in bash.before
    bash.sendline("fg")
    bash.expect_exact("done-42")
    bash.expect_exact(PROMPT)
