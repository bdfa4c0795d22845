"""What capsudo says when it cannot reach its daemon: one line per cause, status 1.

Each cause is made for real: a path with nothing there, a plain file, a
socket left behind by a process that no longer listens, a socket the caller
may not open (as a scratch user), a closed TCP port, an ssh that fails.
"""

from __future__ import annotations

import os
import socket
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .daemon_process import CAPSUDO


SOURCES = [str(path) for path in sorted((Path(__file__).parents[2] / "packages").glob("*/src"))]


def one_line_failure(*args: str, client: list[str] | None = None, **options) -> str:
    result = subprocess.run([*(client or [CAPSUDO]), *args, "--", "true"], capture_output=True, text=True,
                            timeout=30, stdin=subprocess.DEVNULL, **options)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_nothing_at_the_path(sock_dir):
    path = f"{sock_dir}/absent.sock"
    assert one_line_failure("-S", path) == f"capsudo: error: no endpoint at {path}: is its daemon running?"


def test_a_plain_file(sock_dir):
    path = f"{sock_dir}/plain"
    open(path, "w").close()
    assert one_line_failure("-S", path) == f"capsudo: error: cannot connect to {path}: it is not a socket"


def test_a_stale_socket(sock_dir):
    path = f"{sock_dir}/stale.sock"
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(path)  # bound, never listening: what a killed daemon leaves
    assert one_line_failure("-S", f"unix://{path}") == (
        f"capsudo: error: cannot connect to {path}: a socket nobody listens on (left by a daemon that has stopped?)"
    )


@pytest.fixture
def listening_socket(sock_dir):
    path = f"{sock_dir}/root-only.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen()
    os.chown(path, 0, 0)
    os.chmod(path, 0o660)
    yield path
    server.close()


@pytest.fixture
def client_as_scratch_user(scratch_user):
    """The client's command line run as the scratch user, from the source tree
    (the test's interpreter may live where that user cannot go, as /root)."""
    _, uid, gid = scratch_user
    for python in (sys.executable, "/usr/bin/python3", shutil.which("python3") or ""):
        if not python:
            continue
        try:
            probe = subprocess.run([python, "-c", "import capsudo.client"], capture_output=True, user=uid,
                                   group=gid, extra_groups=[], env={"PYTHONPATH": ":".join(SOURCES)})
        except OSError:
            continue  # not this user's to run
        if probe.returncode == 0:
            options = dict(user=uid, group=gid, extra_groups=[], env={"PYTHONPATH": ":".join(SOURCES)})
            return [python, "-m", "capsudo.client"], options
    pytest.skip("no Python interpreter for the client that the scratch user can run")


def test_a_socket_the_caller_may_not_open(listening_socket, sock_dir, client_as_scratch_user):
    client, options = client_as_scratch_user
    os.chmod(sock_dir, 0o755)
    line = one_line_failure("-S", listening_socket, client=client, **options)
    assert line == (
        f"capsudo: error: cannot connect to {listening_socket}: permission denied "
        "(the socket is owned by root:root, mode 660; you are not in group root)"
    )


def test_a_directory_the_caller_may_not_enter(listening_socket, sock_dir, client_as_scratch_user):
    client, options = client_as_scratch_user
    os.chmod(sock_dir, 0o700)
    line = one_line_failure("-S", listening_socket, client=client, **options)
    assert line == (
        f"capsudo: error: cannot connect to {listening_socket}: permission denied "
        f"(the directory {sock_dir} is owned by root:root, mode 700)"
    )


def test_a_closed_tcp_port():
    assert one_line_failure("-S", "tcp://127.0.0.1:1") == (
        "capsudo: error: cannot connect to tcp://127.0.0.1:1: connection refused"
    )


def test_ssh_that_fails_before_connecting(tmp_path):
    fake_ssh = tmp_path / "ssh"
    fake_ssh.write_text("#!/bin/sh\necho 'ssh: Could not resolve hostname far: Name or service not known' >&2\nexit 255\n")
    fake_ssh.chmod(0o755)
    line = one_line_failure("-S", "ssh://far/run/capsudo.sock", env={**os.environ, "CAPSUDO_SSH": str(fake_ssh)})
    assert line == (
        "capsudo: error: cannot connect to ssh://far/run/capsudo.sock: ssh exited with status 255: "
        "ssh: Could not resolve hostname far: Name or service not known"
    )
