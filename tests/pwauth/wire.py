"""A raw client for the password front-end: exact bytes, bad manners on purpose.

Standard library and capsudo.proto.lean only, so it also runs as a script
under a system interpreter as an unprivileged test user:

    python3 wire.py guess SOCKET COUNT PARALLEL SECRET

sends COUNT Secret messages (each on a fresh connection, PARALLEL
connections at a time) and prints one JSON object with the timings and
replies.
"""

from __future__ import annotations

import array
import json
import os
import socket
import struct
import sys
import threading
import time

if __name__ == "__main__":
    _ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.path[:0] = [os.path.join(_ROOT, "packages", name, "src") for name in ("proto",)]

from capsudo.proto import lean  # noqa: E402


def connect(path: str, timeout: float = 30.0) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(path)
    return sock


def handshake(argv=("true",), secret: bytes | None = None) -> bytes:
    parts = [lean.secret(secret)] if secret is not None else []
    parts += [lean.arg(value) for value in argv]
    parts.append(lean.session_type(lean.NON_INTERACTIVE))
    return b"".join(parts)


def send_with_fds(sock: socket.socket, data: bytes, fds) -> None:
    sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])


def read_exactly(sock: socket.socket, size: int) -> bytes | None:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return None if not data else bytes(data)
        data += chunk
    return bytes(data)


def replies(sock: socket.socket) -> list[tuple[int, bytes]]:
    """Every message until the front-end closes (or resets) the connection."""
    found = []
    while True:
        try:
            header = read_exactly(sock, lean.HEADER_SIZE)
        except ConnectionResetError:
            return found
        if header is None or len(header) < lean.HEADER_SIZE:
            return found
        type_code, length = struct.unpack("<II", header)
        payload = read_exactly(sock, length) if length else b""
        found.append((type_code, payload or b""))


def describe(found: list[tuple[int, bytes]]) -> list:
    """Replies as JSON-friendly pairs: ("Error", text), ("Exit", status)..."""
    names = {lean.ERROR: "Error", lean.EXIT: "Exit", lean.UNAUTHORIZED: "Unauthorized"}
    result = []
    for type_code, payload in found:
        if type_code == lean.EXIT:
            result.append(["Exit", lean.exit_status(payload)])
        else:
            result.append([names.get(type_code, str(type_code)), payload.decode("utf-8", "replace")])
    return result


def guess(path: str, secret: bytes) -> dict:
    started = time.monotonic()
    with connect(path, timeout=120) as sock:
        sock.sendall(handshake(("true",), secret))
        send_with_fds(sock, lean.fd(3) + lean.end(), [0, 1, 2])
        found = describe(replies(sock))
    return {"started": started, "ended": time.monotonic(), "replies": found}


def _guess_main(path: str, count: int, parallel: int, secret: bytes) -> None:
    results: list[dict] = []
    lock = threading.Lock()
    remaining = [count]

    def worker() -> None:
        while True:
            with lock:
                if remaining[0] == 0:
                    return
                remaining[0] -= 1
            outcome = guess(path, secret)
            with lock:
                results.append(outcome)

    began = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(parallel)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(json.dumps({"began": began, "finished": time.monotonic(), "results": results}))


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "guess":
        _guess_main(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5].encode())
    else:
        sys.exit(__doc__)
