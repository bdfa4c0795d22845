"""A raw client, run as an unprivileged user, that delegates descriptors of its choosing.

The real `capsudo` only ever delegates its own stdin, stdout and stderr; an
attacker speaks the wire protocol itself and passes whatever it can open:
an O_PATH descriptor of a file it may not read or write, or a descriptor
opened for the wrong direction. `run_as` runs CLIENT_SOURCE (standard
library only: the test's interpreter may live where the user cannot go) as
a given user and returns what came back: the replies and the program's
output.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass

CLIENT_SOURCE = r"""
import array, json, os, select, socket, struct, sys, time

socket_path, kind, specs, stdin_data = sys.argv[1], int(sys.argv[2]), sys.argv[3:6], sys.argv[6]
patience, repeat = float(sys.argv[7]), int(sys.argv[8])
FLAGS = {"path": os.O_PATH, "rdonly": os.O_RDONLY | os.O_NONBLOCK, "wronly": os.O_WRONLY | os.O_NONBLOCK,
         "rdwr": os.O_RDWR}

def message(type_code, payload=b""):
    return struct.pack("<II", type_code, len(payload)) + payload

def session():
    input_read, input_write = os.pipe()
    output_read, output_write = os.pipe()
    os.write(input_write, stdin_data.encode())
    os.close(input_write)
    fds = []
    for position, spec in enumerate(specs):
        if spec == "pipe":
            fds.append(input_read if position == 0 else output_write)
        else:
            flag, _, path = spec.partition(":")
            fds.append(os.open(path, FLAGS[flag]))

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(socket_path)
    sock.sendall(message(5, struct.pack("<I", kind)))
    # Fd and End in one send: a daemon that refuses at the Fd may close before an End sent later.
    sock.sendmsg([message(4, struct.pack("<I", 3)) + message(255)],
                 [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    for fd in set(fds) | {input_read, output_write}:
        os.close(fd)

    received, output, replies = b"", b"", []
    deadline = time.monotonic() + patience
    open_ends = [sock, output_read]
    while open_ends and time.monotonic() < deadline:
        ready, _, _ = select.select(open_ends, [], [], max(0.0, deadline - time.monotonic()))
        for end in ready:
            if end is sock:
                try:
                    chunk = sock.recv(65536)
                except ConnectionResetError:
                    chunk = b""
                if not chunk:
                    open_ends.remove(sock)
                received += chunk
            else:
                chunk = os.read(output_read, 65536)
                if not chunk:
                    open_ends.remove(output_read)
                output += chunk
    sock.close()
    os.close(output_read)
    while len(received) >= 8:
        type_code, length = struct.unpack("<II", received[:8])
        payload = received[8:8 + length]
        received = received[8 + length:]
        replies.append([type_code, struct.unpack("<i", payload)[0] if type_code == 3 else payload.decode("utf-8", "replace")])
    return {"replies": replies, "output": output.decode("utf-8", "replace")}

print(json.dumps([session() for _ in range(repeat)]))
"""

INTERACTIVE, NON_INTERACTIVE = 2, 3
ERROR, EXIT = 6, 3


@dataclass
class Outcome:
    replies: list[list]
    output: str

    @property
    def refusal(self) -> str | None:
        """The Error's text when the daemon refused with one Error and Exit 1."""
        if [kind for kind, _ in self.replies] == [ERROR, EXIT] and self.replies[1][1] == 1:
            return self.replies[0][1]
        return None


def user_python(uid: int, gid: int) -> list[str]:
    """The command prefix that runs a Python the user can execute, as that user."""
    prefix = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups"]
    for python in (sys.executable, "/usr/bin/python3", shutil.which("python3") or ""):
        if python and subprocess.run([*prefix, python, "-c", "pass"], capture_output=True).returncode == 0:
            return [*prefix, python, "-I"]
    raise LookupError("no Python interpreter the user can run")


def run_as(python: list[str], socket_path: str, kind: int, stdin: str, stdout: str, stderr: str,
           stdin_data: str = "", patience: float = 3.0, repeat: int = 1) -> list[Outcome]:
    """Delegate (stdin, stdout, stderr) to the endpoint, in `repeat` sessions
    one after another: each "pipe" (the client's own) or "FLAG:PATH" with
    FLAG one of path, rdonly, wronly, rdwr.

    Waits up to `patience` seconds for each session's end, then leaves it.
    """
    result = subprocess.run(
        [*python, "-c", CLIENT_SOURCE, socket_path, str(kind), stdin, stdout, stderr, stdin_data, str(patience),
         str(repeat)],
        capture_output=True, timeout=repeat * (patience + 1) + 20,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return [Outcome(**outcome) for outcome in json.loads(result.stdout)]
