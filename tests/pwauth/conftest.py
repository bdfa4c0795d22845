"""Real PAM, real users, the real commands.

Session-wide: two test users with known passwords, sharing a group that
owns the endpoints, and PAM service files written for the tests (pam_unix,
and one with a slow module in front). Everything is removed afterwards.
The client runs as a test user through a real terminal (pexpect).
"""

from __future__ import annotations

import glob
import io
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
PWAUTH = str(BIN / "capsudod-pwauth")
CAPSUDOD = str(BIN / "capsudod")
CAPSUDO = str(BIN / "capsudo")
REPO = Path(__file__).resolve().parents[2]
CLIENT_PACKAGES = [str(REPO / "packages" / name / "src") for name in ("client", "core", "proto", "transport")]
WIRE = str(Path(__file__).with_name("wire.py"))

PAM_DIRECTORY = "/etc/pam.d"
CLIENT_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "TERM": "dumb", "LANG": "C.UTF-8"}
# Every secret a test types or sends: none may ever appear in a log.
WRONG_PASSWORDS = ("wrong-horse-battery", "not-it-either", "still-wrong-42")


def find_pam_module(name: str) -> str | None:
    patterns = ["/lib/security", "/lib64/security", "/usr/lib/security", "/usr/lib64/security",
                "/lib/*/security", "/usr/lib/*/security"]
    for pattern in patterns:
        for directory in glob.glob(pattern):
            if os.path.exists(os.path.join(directory, name)):
                return os.path.join(directory, name)
    return None


@pytest.fixture(scope="session")
def pam_system():
    """Skips unless this is root on a system with Linux-PAM, pam_unix and the user tools."""
    if os.geteuid() != 0:
        pytest.skip("needs root (creates users and PAM service files)")
    if find_pam_module("pam_unix.so") is None:
        pytest.skip("pam_unix.so is not installed")
    for tool in ("useradd", "userdel", "groupadd", "groupdel", "chpasswd", "usermod", "setpriv"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    try:
        import pam

        pam.PamAuthenticator()
    except Exception as exc:
        pytest.skip(f"python-pam cannot load libpam: {exc}")


@dataclass
class PamUser:
    name: str
    uid: int
    gid: int
    password: str


def _create_user(name: str, group: str | None) -> PamUser:
    extra = ["-G", group] if group else []
    subprocess.run(
        ["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
         "--shell", "/usr/sbin/nologin", *extra, name],
        check=True, capture_output=True,
    )
    password = "pw-" + secrets.token_urlsafe(12)
    subprocess.run(["chpasswd"], input=f"{name}:{password}\n".encode(), check=True, capture_output=True)
    entry = pwd.getpwnam(name)
    return PamUser(name, entry.pw_uid, entry.pw_gid, password)


def _remove_user(name: str) -> None:
    subprocess.run(["userdel", name], capture_output=True)


@dataclass
class PamUsers:
    group: str
    alice: PamUser
    bob: PamUser


@pytest.fixture(scope="session")
def users(pam_system):
    """Two users with known passwords, both in a group that may use the endpoints."""
    tag = secrets.token_hex(3)
    group = f"cspwg{tag}"
    subprocess.run(["groupadd", "--system", group], check=True, capture_output=True)
    created = []
    try:
        alice = _create_user(f"cspwa{tag}", group)
        created.append(alice.name)
        bob = _create_user(f"cspwb{tag}", group)
        created.append(bob.name)
        yield PamUsers(group, alice, bob)
    finally:
        for name in created:
            _remove_user(name)
        subprocess.run(["groupdel", group], capture_output=True)


@pytest.fixture
def make_user(users):
    """A throwaway user in the endpoints' group, for tests that change the account."""
    made = []

    def make() -> PamUser:
        user = _create_user(f"cspwx{secrets.token_hex(3)}", users.group)
        made.append(user.name)
        return user

    yield make
    for name in made:
        _remove_user(name)


def _write_service(lines: list[str]) -> str:
    name = f"cspw-test-{secrets.token_hex(4)}"
    Path(PAM_DIRECTORY, name).write_text("\n".join(lines) + "\n")
    return name


@dataclass
class Services:
    # pam_unix alone; nodelay, so the front-end's own delay is what is measured.
    plain: str
    # A module that takes SLOW_PAM seconds, then pam_unix.
    slow: str


SLOW_PAM = 2.0


@pytest.fixture(scope="session")
def services(pam_system):
    sleep = shutil.which("sleep")
    if find_pam_module("pam_exec.so") is None or sleep is None:
        pytest.skip("pam_exec.so or sleep is missing")
    written = []
    try:
        written.append(_write_service(["auth required pam_unix.so nodelay", "account required pam_unix.so"]))
        written.append(_write_service([f"auth required pam_exec.so quiet {sleep} {SLOW_PAM:g}",
                                       "auth required pam_unix.so nodelay", "account required pam_unix.so"]))
        yield Services(*written)
    finally:
        for name in written:
            try:
                os.unlink(os.path.join(PAM_DIRECTORY, name))
            except FileNotFoundError:
                pass


def children(pid: int) -> list[tuple[int, str]]:
    """(pid, state) of each child of `pid`, from /proc."""
    found = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            text = Path(stat).read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()
        if int(fields[1]) == pid:
            found.append((int(stat.split("/")[2]), fields[0]))
    return found


def zombies_of(pid: int, settle: float = 3.0) -> list[int]:
    """Children of `pid` still in state Z after `settle` seconds (reaping is not instant)."""
    deadline = time.monotonic() + settle
    while True:
        found = [child for child, state in children(pid) if state == "Z"]
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


@dataclass
class FrontEnd:
    socket: str
    process: subprocess.Popen
    log_path: Path
    argv: list[str] = field(default_factory=list)

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_for_log(self, pattern: str, timeout: float = 15.0) -> re.Match:
        deadline = time.monotonic() + timeout
        while True:
            match = re.search(pattern, self.log())
            if match:
                return match
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} not in the log within {timeout}s:\n{self.log()}")
            time.sleep(0.05)

    def stop(self, timeout: float = 15.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)


def wait_for_path(path: str, process: subprocess.Popen, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear (exit status {process.poll()})")
        time.sleep(0.02)


@pytest.fixture
def endpoint_dir(sock_dir):
    # Test users must reach the socket; its own owner and mode decide the rest.
    os.chmod(sock_dir, 0o755)
    return sock_dir


@pytest.fixture
def front_end(endpoint_dir, users, services):
    """Start the real capsudod-pwauth; on teardown check it left no zombie,
    stops cleanly, and never logged a secret."""
    started: list[FrontEnd] = []

    def start(*options: str, command=(), service: str | None = None, name: str = "auth.sock",
              env: dict | None = None) -> FrontEnd:
        path = os.path.join(endpoint_dir, name)
        argv = [PWAUTH, "-S", path, "-o", f"root:{users.group}", "-m", "0770",
                "--service", service or services.plain, *options]
        if command:
            argv += ["--", *command]
        env = dict(env or {"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
        log_path = Path(endpoint_dir, name + ".log")
        with open(log_path, "wb") as log:
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                       env=env)
        front = FrontEnd(path, process, log_path, argv)
        started.append(front)
        try:
            wait_for_path(path, process)
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {log_path.read_text()}") from None
        return front

    yield start
    secrets_used = [users.alice.password, users.bob.password, *WRONG_PASSWORDS]
    for front in started:
        try:
            if front.process.poll() is None:
                assert zombies_of(front.process.pid) == [], front.log()
                assert front.stop() == 0, front.log()
            text = front.log()
            for secret in secrets_used:
                assert secret not in text, "a secret reached the log"
        finally:
            if front.process.poll() is None:
                front.process.kill()
                front.process.wait()


def _runs_as(user: PamUser, argv: list[str]) -> bool:
    probe = ["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--init-groups", *argv]
    return subprocess.run(probe, capture_output=True, env=CLIENT_ENV, timeout=30).returncode == 0


@pytest.fixture(scope="session")
def client_program(users):
    """How a test user runs the client: the console script if they can reach
    its interpreter, else the same package sources under the system Python
    (the client needs nothing beyond the standard library)."""
    if _runs_as(users.alice, [CAPSUDO, "-h"]):
        return [CAPSUDO]
    boot = ("import sys; sys.path[:0] = %r; from capsudo.client import main; sys.exit(main())"
            % CLIENT_PACKAGES)
    for python in ("/usr/bin/python3", shutil.which("python3") or ""):
        if python and _runs_as(users.alice, [python, "-I", "-B", "-c", boot, "-h"]):
            return [python, "-I", "-B", "-c", boot]
    pytest.skip("no interpreter the test users can run the client with")


@pytest.fixture(scope="session")
def user_python(users):
    """An interpreter the test users can run (for tests/pwauth/wire.py)."""
    for python in (sys.executable, "/usr/bin/python3", shutil.which("python3") or ""):
        if python and _runs_as(users.bob, [python, "-c", "pass"]):
            return python
    pytest.skip("no interpreter the test users can run")


@dataclass
class ClientRun:
    status: int | None
    transcript: str
    elapsed: float

    @property
    def prompts(self) -> int:
        return self.transcript.count("password: ")


def as_user(user: PamUser) -> list[str]:
    return ["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--init-groups"]


@pytest.fixture
def run_client(client_program):
    """Run `capsudo -S SOCKET ARGS...` as `user` on a real terminal, typing
    each of `passwords` at a prompt (Enter sends CR, as a keyboard does)."""
    import pexpect

    def run(user: PamUser, socket_path: str, *args: str, passwords=(), timeout: float = 60) -> ClientRun:
        argv = [*as_user(user), *client_program, "-S", socket_path, *args]
        transcript = io.StringIO()
        started = time.monotonic()
        child = pexpect.spawn(argv[0], argv[1:], env=CLIENT_ENV, timeout=timeout, encoding="utf-8",
                              codec_errors="replace", dimensions=(24, 80))
        child.logfile_read = transcript
        try:
            for password in passwords:
                child.expect(r"password: ")
                child.send(password + "\r")
            child.expect(pexpect.EOF)
        finally:
            child.close(force=True)
        return ClientRun(child.exitstatus, transcript.getvalue(), time.monotonic() - started)

    return run
