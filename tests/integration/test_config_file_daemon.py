"""`capsudod --config FILE`: the real daemon serving the endpoints of a real file, reloaded by SIGHUP.

Each endpoint is used by the real `capsudo`; the run-as test runs the client
as one user the test creates and the program as another, as an operator
would declare it.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from .daemon_process import CAPSUDO, CAPSUDOD, capsudo, wait_for_path


class FileDaemon:
    def __init__(self, path: Path, log_path: Path, env=None) -> None:
        self.path = path
        self.log_path = log_path
        log = open(log_path, "wb")
        self.process = subprocess.Popen([CAPSUDOD, "--config", str(path)], stdin=subprocess.DEVNULL,
                                        stdout=log, stderr=log, env=env)
        log.close()

    def log(self) -> str:
        return self.log_path.read_text()

    def reload(self, expect: str, timeout: float = 10.0) -> None:
        """SIGHUP, then wait until the log says `expect` after it."""
        before = len(self.log())
        self.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while expect not in self.log()[before:]:
            assert self.process.poll() is None, self.log()
            assert time.monotonic() < deadline, f"no {expect!r} after SIGHUP: {self.log()[before:]}"
            time.sleep(0.02)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(15)


@pytest.fixture
def file_daemons():
    started: list[FileDaemon] = []
    yield started
    for daemon in started:
        if daemon.process.poll() is None:
            daemon.process.kill()
            daemon.process.wait()


def _endpoint(name: str, sock_dir: str, command: list[str], **fields) -> str:
    lines = [f"[endpoint.{name}]", f'listen = "{sock_dir}/{name}"', f"command = {json.dumps(command)}"]
    lines += [f"{key} = {value}" for key, value in fields.items()]
    return "\n".join(lines) + "\n\n"


def _start(sock_dir: str, text: str, file_daemons, *names: str) -> FileDaemon:
    path = Path(sock_dir, "capsudo.toml")
    path.write_text(text)
    daemon = FileDaemon(path, Path(sock_dir, "daemon.log"))
    file_daemons.append(daemon)
    for name in names:
        try:
            wait_for_path(f"{sock_dir}/{name}")
        except TimeoutError:
            raise AssertionError(daemon.log()) from None
    return daemon


DEFAULTS = '[defaults]\nclient-environment = false\nmode = "0666"\n\n'


def test_three_endpoints_then_a_reload_that_adds_removes_and_keeps_a_session(sock_dir, file_daemons):
    first = DEFAULTS + _endpoint("year", sock_dir, ["date", "-u", "+%Y"], pin='"command"') \
        + _endpoint("echo", sock_dir, ["echo", "echo:"]) \
        + _endpoint("shell", sock_dir, ["sh", "-c"])
    daemon = _start(sock_dir, first, file_daemons, "year", "echo", "shell")

    assert capsudo(f"{sock_dir}/year", "ignored").stdout == time.strftime("%Y\n", time.gmtime()).encode()
    assert capsudo(f"{sock_dir}/echo", "hello").stdout == b"echo: hello\n"
    assert capsudo(f"{sock_dir}/shell", "echo $((6 * 7))").stdout == b"42\n"

    # A session of "shell" runs on while "echo" goes away and "date" arrives.
    running = subprocess.Popen([CAPSUDO, "-S", f"{sock_dir}/shell", "--", "sleep 1.5; echo finished"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(0.5)
    second = DEFAULTS + _endpoint("year", sock_dir, ["date", "-u", "+%Y"], pin='"command"') \
        + _endpoint("shell", sock_dir, ["sh", "-c"]) \
        + _endpoint("date", sock_dir, ["date", "-u", "+%m"], pin='"command"')
    daemon.path.write_text(second)
    daemon.reload("endpoint date: listening on")
    assert "endpoint echo: removed" in daemon.log()
    assert not os.path.exists(f"{sock_dir}/echo")
    assert capsudo(f"{sock_dir}/date").stdout == time.strftime("%m\n", time.gmtime()).encode()
    out, err = running.communicate(timeout=15)
    assert (running.returncode, out) == (0, b"finished\n"), err

    # A file with a mistake changes nothing, and says where the mistake is.
    daemon.path.write_text(second + '[endpoint.bad]\nlisten = "/x"\nmax-sessions = "many"\n')
    daemon.reload("reload:")
    line = next(line for line in daemon.log().splitlines() if "reload:" in line)
    assert f"{daemon.path}:" in line and "endpoint.bad.max-sessions" in line, line
    number = int(line.split(f"{daemon.path}:")[1].split(":")[0])
    assert daemon.path.read_text().splitlines()[number - 1] == 'max-sessions = "many"'
    assert capsudo(f"{sock_dir}/shell", "echo still").stdout == b"still\n"
    assert capsudo(f"{sock_dir}/date").returncode == 0

    assert daemon.stop() == 0, daemon.log()
    assert not any(os.path.exists(f"{sock_dir}/{name}") for name in ("year", "shell", "date"))


def test_approve_without_a_control_socket_is_refused(tmp_path):
    path = tmp_path / "capsudo.toml"
    path.write_text('[endpoint.a]\nlisten = "/tmp/a"\ncommand = ["true"]\napprove = true\n')
    result = subprocess.run([CAPSUDOD, "--config", str(path), "--check"], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr == (f"capsudod: error: {path}: endpoint a has approve = true, but without a [control] "
                             "table nobody could decide\n")


@pytest.mark.parametrize(("text", "where", "what"), [
    ('[endpoint.a]\nlisten = "/tmp/a"\ncommand = ["true"]\nmaxsessions = 3\n', 4, "endpoint.a.maxsessions: unknown field"),
    ('[endpoint.a]\nlisten = "/tmp/a"\ncommand = "true"\n', 3, "endpoint.a.command: takes the program"),
    ('[endpoint.a]\nlisten = "/tmp/a"\npin = "all"\n', 3, "endpoint.a.pin: takes 'command' or 'prefix'"),
    ('[endpoint.a]\nlisten = "/tmp/a"\nhandshake-timeout = "3 weeks"\n', 3, "endpoint.a.handshake-timeout"),
    ('[endpoint.a]\nlisten = "/tmp/a"\npassword = "pam"\n', 3, "endpoint.a.password: not supported by this capsudod yet"),
    ('[endpoint.a]\nlisten = "/tmp/a"\napprove = true\napprovers = "no-such-group-here"\n', 1,
     "endpoint.a.approvers: no group 'no-such-group-here'"),
    ('[endpoint.a]\ncommand = ["true"]\n', 1, "endpoint.a: needs `listen`"),
    ('[endpoint.a]\nlisten = "/tmp/a"\nuser = "no-such-user-here"\n', 1, "no user 'no-such-user-here'"),
])
def test_check_names_the_file_line_and_field_of_a_mistake(tmp_path, text, where, what):
    path = tmp_path / "capsudo.toml"
    path.write_text(text)
    result = subprocess.run([CAPSUDOD, "--config", str(path), "--check"], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith(f"capsudod: error: {path}:{where}: "), result.stderr
    assert what in result.stderr and result.stderr.count("\n") == 1, result.stderr


def test_check_prints_what_would_be_served(tmp_path):
    path = tmp_path / "capsudo.toml"
    path.write_text(DEFAULTS + _endpoint("restart-web", str(tmp_path), ["systemctl", "restart", "nginx"],
                                         pin='"command"', description='"Restart the web server"'))
    result = subprocess.run([CAPSUDOD, "--config", str(path), "--check"], capture_output=True, text=True)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == (f"restart-web: {tmp_path}/restart-web runs systemctl restart nginx "
                             "(command pinned, environment pinned): Restart the web server\n")


def test_config_takes_no_other_option(tmp_path):
    result = subprocess.run([CAPSUDOD, "--config", str(tmp_path / "x.toml"), "-f"], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr == "capsudod: error: -f does not go with --config or --check: the file says everything " \
                            "(see capsudod -h)\n"


@pytest.fixture
def program_user():
    if os.geteuid() != 0 or shutil.which("useradd") is None:
        pytest.skip("needs root and useradd")
    name = f"csfile{secrets.token_hex(3)}"
    home = f"/tmp/{name}-home"
    subprocess.run(["useradd", "--system", "--user-group", "--create-home", "--home-dir", home,
                    "--shell", "/bin/sh", name], check=True, capture_output=True)
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", "--remove", name], check=False, capture_output=True)


@pytest.mark.root
def test_run_as_limits_and_audit_from_the_file(sock_dir, file_daemons, program_user, scratch_user):
    os.chmod(sock_dir, 0o755)
    audit = Path(sock_dir, "audit.jsonl")
    shell = '["sh", "-c", "echo $(id -un) $HOME $USER $CAPSUDO_USER $CAPSUDO_ENDPOINT; ulimit -n"]'
    text = DEFAULTS + (
        f'[endpoint.whoami]\nlisten = "{sock_dir}/whoami"\ncommand = {shell}\npin = "command"\n'
        f'user = "{program_user.pw_name}"\nlimits = {{ nofile = 77 }}\naudit = ["{audit}"]\n'
        'client-environment = true\n\n'
        f'[endpoint.slow]\nlisten = "{sock_dir}/slow"\ncommand = ["sleep", "30"]\npin = "command"\n'
        'timeout = "1s"\nhangup-grace = "1s"\n')
    daemon = _start(sock_dir, text, file_daemons, "whoami", "slow")
    name, uid, gid = scratch_user
    as_caller = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups"]

    result = subprocess.run([*as_caller, CAPSUDO, "-S", f"{sock_dir}/whoami", "-e", "CAPSUDO_USER=root",
                             "-e", "HOME=/root", "--"], capture_output=True, timeout=20)
    home = program_user.pw_dir
    assert result.stdout.decode() == f"{program_user.pw_name} {home} {program_user.pw_name} {name} whoami\n77\n", \
        (result.stderr, daemon.log())

    started = time.monotonic()
    result = subprocess.run([*as_caller, CAPSUDO, "-S", f"{sock_dir}/slow", "--"], capture_output=True, timeout=20)
    assert result.returncode == 128 + signal.SIGTERM
    assert result.stderr.decode() == "capsudo: error: the program ran past its 1s timeout and was stopped\n"
    assert time.monotonic() - started < 5

    events = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [event["event"] for event in events] == ["accepted", "requested", "decided", "started", "ended"]
    assert len({event["session"] for event in events}) == 1
    assert all(event["endpoint"] == "whoami" for event in events)
    assert events[0]["peer"]["uid"] == uid and events[0]["peer"]["user"] == name
    assert {"CAPSUDO_USER", "HOME"} <= set(events[1]["env_names"])  # the names asked for, never their values
    assert "=root" not in audit.read_text() and "/root" not in events[1:3].__repr__()
    assert events[4]["status"] == 0
    assert daemon.stop() == 0


@pytest.mark.root
def test_the_example_file_checks(tmp_path):
    """examples/capsudo.toml, as installed, on a system that has the group it names."""
    import grp

    example = Path(__file__).resolve().parents[2] / "examples" / "capsudo.toml"
    created = False
    try:
        grp.getgrnam("capsudo")
    except KeyError:
        if shutil.which("groupadd") is None or os.geteuid() != 0:
            pytest.skip("the example names group capsudo; needs root and groupadd to create it")
        subprocess.run(["groupadd", "--system", "capsudo"], check=True, capture_output=True)
        created = True
    try:
        result = subprocess.run([CAPSUDOD, "--config", str(example), "--check"], capture_output=True, text=True)
    finally:
        if created:
            subprocess.run(["groupdel", "capsudo"], check=False, capture_output=True)
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    assert [line.split(":")[0] for line in result.stdout.splitlines()] == ["restart-nginx", "apt-update", "list-spool"]


def test_an_endpoint_exposed_in_another_directory_and_on_tcp(sock_dir, file_daemons):
    zone = Path(sock_dir, "zone")
    zone.mkdir()
    text = DEFAULTS + _endpoint("echo", sock_dir, ["echo", "echo:"],
                                expose=f'["tcp://127.0.0.1:0", {{ listen = "{zone}/echo", mode = "0600" }}]')
    daemon = _start(sock_dir, text, file_daemons, "echo")
    wait_for_path(f"{zone}/echo")
    assert oct(os.stat(f"{zone}/echo").st_mode & 0o777) == "0o600"
    assert oct(os.stat(f"{sock_dir}/echo").st_mode & 0o777) == "0o666"
    tcp = next(line.split("exposed on ")[1] for line in daemon.log().splitlines() if "exposed on tcp://" in line)
    for address in (f"{sock_dir}/echo", f"{zone}/echo", tcp):
        result = capsudo(address, "hello")
        assert (result.returncode, result.stdout) == (0, b"echo: hello\n"), (address, result.stderr)
    # Removing the endpoint takes every place it was offered.
    daemon.path.write_text(DEFAULTS + _endpoint("other", sock_dir, ["true"]))
    daemon.reload("endpoint other: listening on")
    assert not os.path.exists(f"{zone}/echo") and not os.path.exists(f"{sock_dir}/echo")
    assert capsudo(tcp, "hello").returncode == 1
    assert daemon.stop() == 0
