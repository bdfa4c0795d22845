"""The client's password prompt, on a real terminal."""

import os
import subprocess
import sys

import pexpect
import pytest

pytestmark = pytest.mark.terminal

# Prints what ask_secret returned, then whether echo is back on and whether
# the terminal's line mode is what it was before.
SCRIPT = r"""
import sys, termios, tty
from capsudo.core._secret_prompt import ask_secret
if "raw" in sys.argv:
    tty.setraw(0)
before = termios.tcgetattr(0)
try:
    secret = ask_secret("[capsudo] someone@host's password: ")
    outcome = "secret=%r" % secret
except BaseException as exc:
    outcome = "raised=%s" % type(exc).__name__
after = termios.tcgetattr(0)
termios.tcsetattr(0, termios.TCSANOW, before)
print("\r\n%s restored=%s" % (outcome, before == after))
"""


def spawn(*args):
    return pexpect.spawn(sys.executable, ["-c", SCRIPT, *args], timeout=20, encoding="utf-8")


@pytest.mark.parametrize("enter", ["\r", "\n"])
def test_enter_ends_the_line_and_is_not_kept_and_nothing_is_echoed(enter):
    child = spawn()
    child.expect_exact("[capsudo] someone@host's password: ")
    child.send("hunter2" + enter)
    child.expect(r"secret=(.*) restored=(\w+)")
    assert child.match.group(1) == "b'hunter2'"
    assert child.match.group(2) == "True"
    assert "hunter2" not in child.before
    child.expect(pexpect.EOF)


def test_a_terminal_left_in_raw_mode_still_ends_the_line_on_enter():
    child = spawn("raw")
    child.expect_exact("password: ")
    child.send("s3cret\r")
    child.expect(r"secret=(.*) restored=(\w+)")
    assert (child.match.group(1), child.match.group(2)) == ("b's3cret'", "True")


def test_ctrl_c_restores_the_terminal():
    child = spawn()
    child.expect_exact("password: ")
    child.send("half")
    child.sendintr()
    child.expect(r"raised=(\w+) restored=(\w+)")
    assert child.match.group(1) in ("KeyboardInterrupt", "Interrupted")
    assert child.match.group(2) == "True"


def test_the_prompt_cannot_carry_escape_sequences():
    code = ("from capsudo.core._secret_prompt import ask_secret; "
            "print(ask_secret('\\x1b]0;evil\\x07pw: '))")
    child = pexpect.spawn(sys.executable, ["-c", code], timeout=20, encoding="utf-8")
    child.expect_exact("?]0;evil?pw: ")
    child.send("x\r")
    child.expect(pexpect.EOF)


def test_without_a_terminal_it_is_a_client_error():
    code = ("from capsudo.core import ClientError\n"
            "from capsudo.core._secret_prompt import ask_secret\n"
            "try:\n    ask_secret('pw: ')\nexcept ClientError as exc:\n    print(exc)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            stdin=subprocess.DEVNULL, start_new_session=True, timeout=20)
    assert result.stdout == ("the endpoint asks for a password, and there is no terminal to ask on "
                             "(/dev/tty: No such device or address)\n")


def test_the_prompt_costs_the_client_neither_trio_nor_construct():
    code = ("import sys; from capsudo.core._secret_prompt import ask_secret; "
            "print(sorted(m for m in ('trio', 'construct') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout == "[]\n"
