"""`capsudo -l`: our daemon describes its endpoint; a daemon that does not know the extension
(a stand-in that speaks only the messages of docs/protocol.md) gets a clear "does not describe
itself", with its exit status, and never a hang."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time

import pytest

from capsudo import core
from capsudo.proto import lean

from .daemon_process import CAPSUDO


def _capsudo(*args: str, timeout: float = 15) -> subprocess.CompletedProcess:
    return subprocess.run([CAPSUDO, *args], capture_output=True, text=True, timeout=timeout)


def test_our_daemon_describes_a_pinned_endpoint(daemon_factory):
    daemon = daemon_factory("--description", "restarts the web server", "-f", "-E", "-e", "LANG=C.UTF-8",
                            "-e", "API_TOKEN=hunter2", "systemctl", "restart", "nginx")
    listed = _capsudo("-l", "-S", daemon.socket)
    assert listed.returncode == 0, listed.stderr
    assert "restarts the web server" in listed.stdout
    assert "runs exactly: systemctl restart nginx (your arguments are ignored)" in listed.stdout
    described = json.loads(_capsudo("-l", "--json", "-S", daemon.socket).stdout)
    assert described["arguments"] == "pinned" and described["client_environment"] is False
    assert described["program"].endswith("/systemctl")
    # A pinned value is told only where it cannot be a secret.
    assert described["environment"] == {"LANG": "C.UTF-8", "API_TOKEN": None}
    assert "hunter2" not in listed.stdout


def test_a_prefix_endpoint_says_that_arguments_follow(daemon_factory):
    daemon = daemon_factory("echo", "hello")
    info = core.describe(daemon.socket)
    assert (info.arguments, info.command, info.client_environment) == ("prefix", ["echo", "hello"], True)


def test_the_operator_can_keep_an_endpoint_to_its_name_and_description(daemon_factory):
    daemon = daemon_factory("--description", "backups", "--describe", "name", "-f", "tar", "-c", "/srv")
    described = json.loads(_capsudo("-l", "--json", "-S", daemon.socket).stdout)
    assert described == {"name": daemon.socket, "description": "backups", "detail": "name", "password": False}


def test_our_daemon_describes_over_tcp(network_daemon_factory):
    daemon = network_daemon_factory("tcp://127.0.0.1:0", "--description", "over the network", "id")
    assert core.describe(daemon.socket).description == "over the network"


def _reference_stand_in(path: str, answer: str) -> threading.Thread:
    """A daemon that knows only the messages of docs/protocol.md, and meets an unknown one."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)

    def serve() -> None:
        connection, _ = listener.accept()
        with connection, listener:
            type_code, _ = lean.parse_header(connection.recv(lean.HEADER_SIZE, socket.MSG_WAITALL), known=range(1 << 32))
            assert type_code not in lean.KNOWN_TYPES
            if answer == "error":
                connection.sendall(lean.message(lean.ERROR, f"unknown message type {type_code}".encode())
                                   + lean.message(lean.EXIT, lean.exit_payload(1)))
            elif answer == "silence":
                time.sleep(3)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("answer, says", [("close", "it closed the connection"),
                                          ("error", "it answered: unknown message type 32"),
                                          ("silence", "no answer within 0.5 s")])
def test_a_daemon_without_the_extension_does_not_describe_itself(sock_dir, answer, says):
    path = os.path.join(sock_dir, "reference.sock")
    _reference_stand_in(path, answer)
    started = time.monotonic()
    listed = _capsudo("-l", "--describe-timeout", "0.5", "-S", path)
    assert listed.returncode == core.NOT_DESCRIBED_STATUS == 3
    assert listed.stderr == f"capsudo: error: this endpoint does not describe itself ({says})\n"
    assert time.monotonic() - started < 3


def test_a_daemon_that_is_not_there_is_not_the_same_answer(sock_dir):
    listed = _capsudo("-l", "-S", os.path.join(sock_dir, "nobody.sock"))
    assert listed.returncode == 1 and "is its daemon running?" in listed.stderr
