"""The user's terminal after the daemon died mid-session, as tmux sees its pane.

A program turns on the alternate screen, hides the cursor, asks for mouse
reports and bracketed paste; the daemon is killed with SIGKILL, so nothing
of the program's side can turn them off again. The client must.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from .daemon_process import CAPSUDO

pytestmark = pytest.mark.terminal

MODES_ON = r"\033[?1049h\033[?25l\033[?1000h\033[?1006h\033[?2004h"


@pytest.fixture
def tmux(tmp_path):
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    socket = str(tmp_path / "tmux.sock")

    def run(*args: str) -> str:
        return subprocess.run(["tmux", "-S", socket, *args], check=True, capture_output=True, text=True,
                              timeout=10).stdout

    yield run
    subprocess.run(["tmux", "-S", socket, "kill-server"], capture_output=True, timeout=10)


def wait_for(condition, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_modes_are_turned_off_when_the_daemon_dies(daemon, tmux, tmp_path):
    program = f"printf '{MODES_ON}'; echo modes-on; exec sleep 30"
    line = (f"{CAPSUDO} -S {daemon.socket} -- sh -c \"{program}\"; echo client-status=$?; "
            f"exec cat -v > {tmp_path}/typed")
    tmux("new-session", "-d", "-s", "crash", "-x", "80", "-y", "24", "sh", "-c", line)

    def flags() -> list[str]:
        return tmux("display", "-p", "-t", "crash", "#{alternate_on} #{cursor_flag} #{mouse_any_flag}").split()

    wait_for(lambda: flags() == ["1", "0", "1"], "the program's modes never came on")
    daemon.process.kill()
    daemon.process.wait()
    wait_for(lambda: "client-status=1" in tmux("capture-pane", "-p", "-t", "crash"), "the client did not end")
    assert flags() == ["0", "1", "0"]
    # Bracketed paste is off: a paste arrives without the markers around it.
    tmux("set-buffer", "pasted-text")
    tmux("paste-buffer", "-p", "-t", "crash")
    tmux("send-keys", "-t", "crash", "Enter")
    typed = tmp_path / "typed"
    wait_for(lambda: typed.exists() and "pasted-text" in typed.read_text(), "the paste never arrived")
    assert typed.read_text() == "pasted-text\n"
