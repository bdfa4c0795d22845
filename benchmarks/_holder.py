"""One peer that holds as many of a daemon's slots as it can get.

fairness.py and tests/integration/test_fairness.py run this as an
unprivileged user (setpriv), so that it is one peer (one uid) to the
daemon, apart from the one being served meanwhile. It opens COUNT
connections to SOCKET, all at once, and on each:

    idle           sends nothing
    sleep SECONDS  a whole request for `sleep SECONDS` (descriptors: /dev/null),
                   one connection every 5 ms
    secret SIZE    a Secret header announcing SIZE bytes, then as much of its
                   payload as the daemon takes
    fill BYTES     the most a handshake can make the daemon keep within BYTES
                   (its --max-bytes): 65535 two-byte Args (65536 is the
                   default --max-items), then one Arg for the rest; no End

It waits SETTLE seconds for answers, prints one JSON line ("opened", "held":
the connections still open and unanswered, "refusals": each distinct
one-line Error with how many got it), then keeps everything until its stdin
closes. Standard library only, so it runs under any user.

    python benchmarks/_holder.py SOCKET COUNT SETTLE MODE [ARG]
"""

import collections
import json
import os
import select
import socket
import struct
import sys
import time

ARG, ERROR, FD, SECRET, END = 1, 6, 4, 7, 255
CHUNK = 256 * 1024
FILL_ITEMS = 65535
PACE = 0.005


def message(type_code, payload=b""):
    return struct.pack("<II", type_code, len(payload)) + payload


def main() -> None:
    path, count, settle, mode = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    argument = sys.argv[5] if len(sys.argv) > 5 else ""
    null = os.open(os.devnull, os.O_RDWR)
    connections = []
    # What each connection still has to send; a refused one stops where it is.
    pending = {}
    for _ in range(count):
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        connection.connect(path)  # blocking: waits for room in a full backlog
        connection.settimeout(10)
        connections.append(connection)
        if mode == "sleep":
            try:
                connection.sendall(message(ARG, b"sleep") + message(ARG, argument.encode()))
                connection.sendmsg([message(FD, struct.pack("<I", 3))],
                                   [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("3i", null, null, null))])
                connection.sendall(message(END))
            except (BrokenPipeError, ConnectionResetError):
                # Refused over the cap before the request was whole: the
                # daemon's one-line Error is still there to be read below.
                pass
            # At the pace of clients that are processes of their own: one
            # handshake after another, not all in progress at once.
            time.sleep(PACE)
        elif mode == "secret":
            size = int(argument)
            pending[connection] = [struct.pack("<II", SECRET, size), size]
        elif mode == "fill":
            items = b"".join(message(ARG, b"%02d" % (i % 100)) for i in range(FILL_ITEMS))
            rest = int(argument) - 2 * FILL_ITEMS
            pending[connection] = [items + struct.pack("<II", ARG, rest), rest]
        connection.setblocking(False)
    replies = {connection: b"" for connection in connections}
    closed = set()
    deadline = time.monotonic() + settle
    filler = b"a" * CHUNK  # valid in a Secret and in an Arg alike
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        open_ones = [c for c in connections if c not in closed]
        writers = [c for c in pending if c not in closed]
        readable, writable, _ = select.select(open_ones, writers, [], min(left, 0.1))
        for connection in writable:
            header, remaining = pending[connection]
            try:
                if header:
                    sent = connection.send(header)
                    pending[connection][0] = header[sent:]
                elif remaining:
                    sent = connection.send(filler[: min(CHUNK, remaining)])
                    pending[connection][1] -= sent
                if not pending[connection][0] and not pending[connection][1]:
                    del pending[connection]
            except BlockingIOError:
                pass
            except OSError:
                del pending[connection]  # refused: the daemon closed its end
        for connection in readable:
            try:
                data = connection.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if data:
                replies[connection] += data
            else:
                closed.add(connection)
    refusals = collections.Counter()
    held = 0
    for connection in connections:
        data = replies[connection]
        if len(data) >= 8:
            type_code, length = struct.unpack("<II", data[:8])
            if type_code == ERROR:
                refusals[data[8 : 8 + length].decode("utf-8", "replace")] += 1
                continue
        if connection not in closed and not data:
            held += 1
        else:
            refusals["(closed without a refusal)" if not data else f"(answered {data[:40]!r})"] += 1
    print(json.dumps({"opened": len(connections), "held": held, "refusals": dict(refusals)}), flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main()
