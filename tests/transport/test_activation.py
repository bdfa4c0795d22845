"""Socket activation and sd_notify at the library level, with real descriptors and sockets.

The named sockets come from systemd's own systemd-socket-activate, passed to
a small program that takes them by name and serves one connection on each.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from capsudo.transport import ActivationError, activated_sockets, notify, notify_ready, notify_reloading, notify_stopping

SOCKET_ACTIVATE = shutil.which("systemd-socket-activate")

TAKE_BY_NAME = textwrap.dedent("""
    import json, sys
    from capsudo.transport import activated_sockets
    passed = activated_sockets()
    names = passed.names
    second, missing, first = passed.take("second"), passed.take("third"), passed.take("first")
    print(json.dumps([names, missing is None, passed.unclaimed()]), flush=True)
    for name, sock in (("first", first), ("second", second)):
        connection, _ = sock.accept()
        connection.sendall(name.encode() + b" " + sock.getsockname().encode())
        connection.close()
""")


def connect_and_read(path: str, timeout: float = 10.0, *, read: bool = True) -> bytes:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(timeout)
        client.connect(path)
        return client.recv(200) if read else b""


@pytest.mark.skipif(SOCKET_ACTIVATE is None, reason="systemd-socket-activate (package systemd) is not installed")
def test_two_named_sockets_are_taken_by_their_names(sock_dir):
    first, second = os.path.join(sock_dir, "one"), os.path.join(sock_dir, "two")
    process = subprocess.Popen(
        [SOCKET_ACTIVATE, "-l", first, "-l", second, "--fdname=first:second", sys.executable, "-c", TAKE_BY_NAME],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        # systemd-socket-activate starts the program at the first connection.
        assert connect_and_read(first) == f"first {first}".encode()
        assert connect_and_read(second) == f"second {second}".encode()
        out, err = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert out.strip() == '[["first", "second"], true, null]'


@pytest.mark.skipif(SOCKET_ACTIVATE is None, reason="systemd-socket-activate (package systemd) is not installed")
def test_sockets_of_one_unit_are_told_apart_by_path_and_the_rest_are_named_as_unclaimed(sock_dir):
    paths = [os.path.join(sock_dir, name) for name in ("a", "b", "c")]
    program = textwrap.dedent(f"""
        import json
        from capsudo.transport import activated_sockets
        passed = activated_sockets()
        sock = passed.take_bound_to({paths[1]!r})
        print(json.dumps([sock.getsockname(), passed.names, passed.unclaimed()]), flush=True)
        passed.close()
    """)
    process = subprocess.Popen(
        [SOCKET_ACTIVATE, *(arg for path in paths for arg in ("-l", path)), "--fdname=unit:unit:unit",
         sys.executable, "-c", program],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        connect_and_read(paths[0], read=False)
        out, err = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert out.strip() == (f'["{paths[1]}", ["unit", "unit"], '
                           '"systemd passed sockets that no endpoint is named for: unit, unit"]')


def test_variables_for_another_process_give_nothing_and_are_removed():
    environ = {"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "2", "LISTEN_FDNAMES": "a:b", "PATH": "/bin"}
    assert len(activated_sockets(environ)) == 0
    assert environ == {"PATH": "/bin"}


@pytest.mark.parametrize("variables, reason", [
    ({"LISTEN_FDS": "two"}, "LISTEN_FDS is 'two', not a number of descriptors"),
    ({"LISTEN_FDS": "2", "LISTEN_FDNAMES": "a:b:c"}, "LISTEN_FDNAMES names 3 sockets but LISTEN_FDS says 2"),
])
def test_variables_that_do_not_add_up_are_refused_in_one_line(variables, reason):
    with pytest.raises(ActivationError, match=f"^{reason}$"):
        activated_sockets({"LISTEN_PID": str(os.getpid()), **variables})


@pytest.fixture
def notify_socket(sock_dir):
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = os.path.join(sock_dir, "notify")
    receiver.bind(path)
    receiver.settimeout(5)
    with receiver:
        yield path, receiver


def test_state_lines_arrive_as_one_datagram_each(notify_socket):
    path, receiver = notify_socket
    environ = {"NOTIFY_SOCKET": path}
    assert notify_ready("serving two endpoints", environ=environ)
    assert receiver.recv(4096) == b"READY=1\nSTATUS=serving two endpoints"
    assert notify_stopping(environ=environ)
    assert receiver.recv(4096) == b"STOPPING=1"
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert notify_reloading(environ=environ)
    state, stamp = receiver.recv(4096).decode().split("\n")
    assert state == "RELOADING=1"
    assert stamp.startswith("MONOTONIC_USEC=")
    assert before <= int(stamp.removeprefix("MONOTONIC_USEC=")) <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def test_an_abstract_notify_socket_is_reached():
    name = f"capsudo-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind("\0" + name)
        receiver.settimeout(5)
        assert notify("STATUS=a line\nwith a break", environ={"NOTIFY_SOCKET": "@" + name})
        assert receiver.recv(4096) == b"STATUS=a line with a break"


def test_without_a_notify_socket_nothing_is_sent_and_nothing_fails(sock_dir):
    assert notify_ready("x", environ={}) is False
    # Nobody bound there (a stopped service manager): no exception either.
    assert notify_ready("x", environ={"NOTIFY_SOCKET": os.path.join(sock_dir, "gone")}) is False
