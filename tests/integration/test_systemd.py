"""capsudod under a service manager: socket activation, sd_notify, and the example units.

systemd's own systemd-socket-activate binds the sockets and starts the real
capsudod on them; a datagram socket of the test's own stands in for
systemd's notify socket. The units are checked by systemd-analyze verify.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from .daemon_process import CAPSUDOD, Daemon, capsudo, kill_left_running, start_daemon, wait_for_path

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "examples" / "systemd"
SOCKET_ACTIVATE = shutil.which("systemd-socket-activate")
ANALYZE = shutil.which("systemd-analyze")
needs_socket_activate = pytest.mark.skipif(
    SOCKET_ACTIVATE is None, reason="systemd-socket-activate (package systemd) is not installed")


@pytest.fixture
def notify_socket(sock_dir):
    """(path, receiver): where capsudod's sd_notify lines arrive."""
    path = os.path.join(sock_dir, "notify")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(path)
    receiver.settimeout(10)
    with receiver:
        yield path, receiver


@pytest.fixture
def started():
    processes = []
    yield processes
    kill_left_running(processes)


def activate(started, sock_dir, sockets: dict[str, str], *capsudod_args: str, notify: str | None = None,
             extra=()) -> Daemon:
    """capsudod started by systemd-socket-activate on `sockets` (name: path), at the first connection."""
    log_path = Path(sock_dir) / "activated.log"
    argv = [SOCKET_ACTIVATE, *extra, *(arg for path in sockets.values() for arg in ("-l", path)),
            f"--fdname={':'.join(sockets)}"]
    if notify is not None:
        argv.append(f"--setenv=NOTIFY_SOCKET={notify}")
    with open(log_path, "wb") as log:
        process = subprocess.Popen([*argv, CAPSUDOD, *capsudod_args], stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    daemon = Daemon(next(iter(sockets.values())), process, log_path)
    started.append(daemon)
    for path in sockets.values():
        wait_for_path(path)
    return daemon


@needs_socket_activate
def test_capsudod_serves_the_named_socket_systemd_passes_and_tells_the_notify_socket(
        started, sock_dir, notify_socket):
    notify_path, received = notify_socket
    path = os.path.join(sock_dir, "restart")
    daemon = activate(started, sock_dir, {"restart": path}, "-f", "-E", "--", "/bin/echo", "restarted",
                      notify=notify_path)
    session = capsudo(path, "--", "ignored", "arguments")
    assert (session.returncode, session.stdout) == (0, b"restarted\n")
    assert session.stderr == b"capsudo: note: this endpoint ignores arguments ('ignored' 'arguments'): ran /bin/echo restarted\n"
    assert received.recv(4096).decode() == f"READY=1\nSTATUS=serving /bin/echo restarted (-f -E) on {path} (passed by systemd as restart)"
    again = capsudo(path, "--")
    assert (again.returncode, again.stdout) == (0, b"restarted\n")
    assert daemon.stop() == 0
    assert received.recv(4096).decode().split("\n")[0] == "STOPPING=1"
    # The socket is systemd's: capsudod leaves its path alone.
    assert os.path.exists(path)
    assert f"listening on {path} (passed by systemd as restart)" in daemon.log()


@needs_socket_activate
def test_two_sockets_for_one_endpoint_are_refused_in_one_line(started, sock_dir):
    paths = {"a": os.path.join(sock_dir, "a"), "b": os.path.join(sock_dir, "b")}
    daemon = activate(started, sock_dir, paths, "--", "/bin/true")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.connect(paths["a"])
        assert daemon.process.wait(10) == 1
    assert daemon.log().splitlines()[-1] == (
        "capsudod: systemd passed 2 sockets (a, b) to a daemon serving one endpoint; give each its own unit "
        "instance, or serve them from a configuration file")


@needs_socket_activate
def test_inetd_style_activation_serves_the_connection_on_stdin(started, sock_dir):
    path = os.path.join(sock_dir, "inetd")
    activate(started, sock_dir, {"inetd": path}, "-f", "--", "/bin/echo", "one session",
             extra=["--inetd", "--accept"])
    for _ in range(2):  # one capsudod per connection
        session = capsudo(path, "--")
        assert (session.returncode, session.stdout) == (0, b"one session\n")


def test_capsudod_on_its_own_endpoint_sends_ready_status_and_stopping(sock_dir, notify_socket):
    notify_path, received = notify_socket
    path = os.path.join(sock_dir, "own")
    daemon = start_daemon(path, "--", "/bin/echo", env={**os.environ, "NOTIFY_SOCKET": notify_path})
    try:
        assert received.recv(4096).decode() == f"READY=1\nSTATUS=serving /bin/echo on {path}"
        assert capsudo(path, "--", "hi").stdout == b"hi\n"
        assert daemon.stop(signal.SIGTERM) == 0
        assert received.recv(4096).decode() == (
            "STOPPING=1\nSTATUS=stopping on SIGTERM, hanging up running programs")
    finally:
        kill_left_running([daemon])


@pytest.mark.parametrize("stdin, reason", [
    (subprocess.DEVNULL, "stdin is not a socket (Socket operation on non-socket)"),
    ("datagram", "stdin is a socket of another kind"),
])
def test_without_an_endpoint_a_stdin_that_is_no_connection_is_refused_in_one_line(stdin, reason):
    pair = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM) if stdin == "datagram" else None
    try:
        result = subprocess.run([CAPSUDOD], stdin=pair[0] if pair else stdin, capture_output=True, text=True,
                                timeout=20, env={k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")})
    finally:
        for end in pair or ():
            end.close()
    assert result.returncode == 2
    assert result.stderr == (f"capsudod: without -S, capsudod serves one session on the Unix socket that is its "
                             f"stdin, and {reason}; give -S endpoint to listen on one\n")


def test_a_passed_descriptor_that_is_no_socket_is_refused_in_one_line(tmp_path):
    # LISTEN_PID must be capsudod's own: the shell sets it, then becomes capsudod.
    result = subprocess.run(
        ["sh", "-c", 'LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=journal exec "$0" 3</etc/hostname', CAPSUDOD],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=20)
    assert (result.returncode, result.stderr) == (
        1, "capsudod: descriptor 3 (journal) that systemd passed is not a socket\n")


def installed_units(directory: Path, capsudod: str) -> list[Path]:
    """The example units with ExecStart= pointing at `capsudod`, as `make install` writes them."""
    units = []
    for unit in sorted(UNITS.glob("capsudod*")):
        if unit.suffix in (".service", ".socket"):
            target = directory / unit.name
            target.write_text(unit.read_text().replace("/usr/local/bin/capsudod", capsudod))
            units.append(target)
    return units


def verify(units: list[Path]) -> subprocess.CompletedProcess:
    # A template is verified through an instance of it.
    names = [str(unit).replace("@.", "@example.") for unit in units]
    return subprocess.run([ANALYZE, "verify", *names], capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze (package systemd) is not installed")
def test_the_example_units_pass_systemd_analyze_verify(tmp_path):
    units = installed_units(tmp_path, CAPSUDOD)
    assert {unit.name for unit in units} == {"capsudod.service", "capsudod.socket", "capsudod-endpoint@.socket",
                                             "capsudod@.socket", "capsudod@.service"}
    result = verify(units)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
    # The check can fail: a unit whose ExecStart= names a missing program does.
    broken = tmp_path / "capsudod@.service"
    broken.write_text(broken.read_text().replace(CAPSUDOD, "/nonexistent/capsudod"))
    assert verify(units).returncode != 0


@needs_socket_activate
def test_a_configuration_file_takes_each_named_socket_for_its_endpoint(started, sock_dir, notify_socket):
    notify_path, received = notify_socket
    paths = {"year": os.path.join(sock_dir, "year.sock"), "hello": os.path.join(sock_dir, "hello.sock")}
    config = Path(sock_dir, "capsudo.toml")
    # The file's own addresses are not where systemd bound the sockets: the names decide.
    config.write_text(
        '[defaults]\nclient-environment = false\npin = "command"\n\n'
        f'[endpoint.year]\nlisten = "{sock_dir}/elsewhere-1"\ncommand = ["date", "-u", "+%Y"]\n\n'
        f'[endpoint.hello]\nlisten = "{sock_dir}/elsewhere-2"\ncommand = ["echo", "hello"]\n')
    daemon = activate(started, sock_dir, paths, "--config", str(config), notify=notify_path)
    assert capsudo(paths["hello"], "--").stdout == b"hello\n"
    assert received.recv(4096).decode() == "READY=1\nSTATUS=serving 2 endpoint(s): year, hello"
    assert capsudo(paths["year"], "--").returncode == 0
    assert not os.path.exists(f"{sock_dir}/elsewhere-1")

    daemon.process.send_signal(signal.SIGHUP)
    assert received.recv(4096).decode().startswith("RELOADING=1\nMONOTONIC_USEC=")
    assert received.recv(4096).decode() == "READY=1\nSTATUS=serving 2 endpoint(s): year, hello"
    assert daemon.stop() == 0
    assert received.recv(4096).decode().split("\n")[0] == "STOPPING=1"


@needs_socket_activate
def test_a_passed_socket_no_endpoint_of_the_file_claims_is_refused(started, sock_dir):
    paths = {"hello": os.path.join(sock_dir, "hello.sock"), "stray": os.path.join(sock_dir, "stray.sock")}
    config = Path(sock_dir, "capsudo.toml")
    config.write_text(f'[endpoint.hello]\nlisten = "{sock_dir}/x"\ncommand = ["echo"]\n')
    daemon = activate(started, sock_dir, paths, "--config", str(config))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.connect(paths["hello"])
        assert daemon.process.wait(10) == 1
    assert "stray" in daemon.log().splitlines()[-1], daemon.log()
