"""The command line over tcp:// at a real terminal: an interactive shell in tmux, and the password flow.

The trio-free client must behave as the trio one did: the terminal raw
while the session runs and restored after it, typed input reaching the
program, a resize of the caller's window reaching the program's pty, and a
wrong password followed by a right one. The password flow crosses
capsudo-proxy, listening on tcp:// in front of capsudod-pwauth's Unix socket.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from .daemon_process import BIN, CAPSUDO
from .proxy_process import start_proxy
from .test_proxy import pam_service  # noqa: F401  (a fixture)

pytestmark = pytest.mark.terminal


class Tmux:
    """A shell in a detached tmux session of a server of its own, read off its screen."""

    PROMPT = "outer-ready> "

    def __init__(self, name: str) -> None:
        self.command = ["tmux", "-L", name, "-f", "/dev/null"]
        # The pane's environment is the server's, not ours: the shell is given its own.
        shell = ["env", "-i", f"PATH={os.environ.get('PATH', '/usr/bin:/bin')}", "TERM=xterm", "LANG=C",
                 f"PS1={self.PROMPT}", "sh"]
        subprocess.run([*self.command, "new-session", "-d", "-s", "t", "-x", "80", "-y", "24", *shell], check=True)
        self.wait_for(self.PROMPT.rstrip())  # capture-pane drops trailing blanks

    def type(self, line: str) -> None:
        subprocess.run([*self.command, "send-keys", "-t", "t", "-l", line], check=True)
        subprocess.run([*self.command, "send-keys", "-t", "t", "Enter"], check=True)

    def screen(self) -> str:
        return subprocess.run([*self.command, "capture-pane", "-p", "-t", "t", "-S", "-200"],
                              capture_output=True, text=True, check=True).stdout

    def wait_for(self, text: str, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while text not in (screen := self.screen()):
            assert time.monotonic() < deadline, f"{text!r} never appeared on the screen:\n{screen}"
            time.sleep(0.05)
        return screen

    def resize(self, columns: int, rows: int) -> None:
        subprocess.run([*self.command, "resize-window", "-t", "t", "-x", str(columns), "-y", str(rows)], check=True)

    def settings(self) -> str:
        """The pane's terminal settings, read from outside it."""
        tty = subprocess.run([*self.command, "display-message", "-p", "-t", "t", "#{pane_tty}"],
                             capture_output=True, text=True, check=True).stdout.strip()
        return subprocess.run(["stty", "-F", tty, "-g"], capture_output=True, text=True, check=True).stdout.strip()

    def close(self) -> None:
        subprocess.run([*self.command, "kill-server"], check=False, capture_output=True)


@pytest.fixture
def tmux(sock_dir):
    if shutil.which("tmux") is None:
        pytest.skip("tmux not installed")
    terminal = Tmux(f"capsudo-lean-{os.getpid()}")
    yield terminal
    terminal.close()


def test_an_interactive_shell_over_tcp_in_tmux(network_daemon_factory, tmux, sock_dir):
    daemon = network_daemon_factory("tcp://127.0.0.1:0")
    before, after = Path(sock_dir) / "before", Path(sock_dir) / "after"
    tmux.type(f"stty -g > {before}")
    tmux.type(f"{CAPSUDO} -i -S {daemon.socket} -- sh; echo status=$?")
    # Arithmetic the shell on the far side works out: the typed line reached a program, not an echo.
    tmux.type("echo typed-$((6 * 7))")
    tmux.wait_for("typed-42")
    assert tmux.settings() != before.read_text().strip()  # raw while the session runs
    tmux.type("echo size=$(stty size)")
    tmux.wait_for("size=24 80")
    tmux.resize(120, 40)
    deadline = time.monotonic() + 10
    while "size=40 120" not in tmux.screen():
        assert time.monotonic() < deadline, f"the program never saw the new size:\n{tmux.screen()}"
        tmux.type("echo size=$(stty size)")
        time.sleep(0.2)
    tmux.type("exit 3")
    tmux.wait_for("status=3")
    tmux.type(f"stty -g > {after}")
    deadline = time.monotonic() + 10
    while not after.exists() or not after.read_text():
        assert time.monotonic() < deadline, "the outer shell never ran stty"
        time.sleep(0.05)
    assert after.read_text() == before.read_text()
    assert tmux.settings() == before.read_text().strip()


@pytest.mark.root
@pytest.mark.pam
def test_a_wrong_password_then_the_right_one_over_tcp(sock_dir, scratch_user, pam_service):  # noqa: F811
    import pexpect

    name, uid, gid = scratch_user
    password = "lean-test-" + os.urandom(6).hex()
    subprocess.run(["chpasswd"], input=f"{name}:{password}\n".encode(), check=True, capture_output=True)
    auth_socket = f"{sock_dir}/auth.sock"
    pwauth_log = open(Path(sock_dir) / "pwauth.log", "wb")
    pwauth = subprocess.Popen(
        [str(BIN / "capsudod-pwauth"), "-S", auth_socket, "-m", "0777", "--service", pam_service,
         "--", str(BIN / "capsudod"), "-f", "--", "echo", "authenticated"],
        stdin=subprocess.DEVNULL, stdout=pwauth_log, stderr=pwauth_log)
    pwauth_log.close()
    os.chmod(sock_dir, 0o711)  # the proxy's user reaches the auth socket inside
    proxy = None
    try:
        deadline = time.monotonic() + 20
        while not os.path.exists(auth_socket):
            assert time.monotonic() < deadline, "capsudod-pwauth never listened"
            time.sleep(0.02)
        # The proxy runs as the scratch user, so that is the peer capsudod-pwauth checks.
        proxy = start_proxy("tcp://127.0.0.1:0", f"unix://{auth_socket}", log_path=Path(sock_dir) / "p.log",
                            prefix=("setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups"))
        child = pexpect.spawn(CAPSUDO, ["-S", proxy.listen], timeout=30,
                              env={"PATH": os.environ["PATH"], "TERM": "dumb"})
        try:
            child.expect_exact(f"[capsudo] {name}@")
            child.expect_exact("password: ")
            child.sendline("not-" + password)
            child.expect_exact("Sorry, try again.")
            child.expect_exact("password: ")
            child.sendline(password)
            child.expect_exact("authenticated")
            child.expect(pexpect.EOF)
        finally:
            child.close()
        assert child.exitstatus == 0
        assert password not in proxy.log()
    finally:
        if proxy is not None:
            proxy.stop()
        pwauth.terminate()
        pwauth.wait(10)
