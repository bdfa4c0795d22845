"""1 GiB of stdout through a session on tcp:// loopback, beside a plain TCP pipe; and `true` on tcp:// beside unix.

Throughput: `capsudo -S tcp://127.0.0.1:PORT -- head -c 1073741824 /dev/zero`
(the real client process, the daemon on loopback) into a pipe this script
drains, interleaved with the same bytes through a plain TCP pipe on
loopback: `head ... | socat -u STDIN TCP-LISTEN:PORT` and `socat -u
TCP:127.0.0.1:PORT STDOUT` into the same kind of pipe. Both paths have the
same shape: a writer, a process that reads its output and sends it over TCP,
a process that receives it and writes it into the pipe. Without socat the
baseline is the same pipe made of two small Python copy loops (said so in
the table).

Latency: `capsudo -S tcp://127.0.0.1:PORT -- true` beside `capsudo -S
SOCKET -- true` on a Unix socket (the blocking path without trio), ROUNDS
runs each, interleaved.

Targets: the transfer (first byte to end-of-file) of 1 GiB through tcp:// at
400 MB/s or more (median). The latency is reported, with no target.

    .venv/bin/python benchmarks/tcp_throughput.py [REPETITIONS [ROUNDS]]
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
import time

from _harness import CAPSUDO, CAPSUDOD, PYTHON, Daemon, Verdict, ensure_bytecode, median, ms, percentile, spawn_and_wait, table
from throughput import HEAD, SIZE, through_pipe

TARGET_RATE = 400e6  # bytes per second
SOCAT = shutil.which("socat")

# The baseline without socat: the same two hops, as plain copy loops.
_PY_SENDER = """
import socket, sys
listener = socket.create_server(("127.0.0.1", int(sys.argv[1])))
connection, _ = listener.accept()
while chunk := sys.stdin.buffer.raw.read(1 << 18):
    connection.sendall(chunk)
"""
_PY_RECEIVER = """
import socket, sys, time
for _ in range(500):
    try:
        connection = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
        break
    except ConnectionRefusedError:
        time.sleep(0.01)
while chunk := connection.recv(1 << 18):
    sys.stdout.buffer.raw.write(chunk)
"""


class NetworkDaemon(Daemon):
    """`capsudod -S tcp://127.0.0.1:0`, its real address read from its log; SIGTERM on exit."""

    def __enter__(self) -> "NetworkDaemon":
        ensure_bytecode()
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen([CAPSUDOD, "-S", "tcp://127.0.0.1:0"], stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=log)
        deadline = time.monotonic() + 15
        while True:
            with open(self.log_path) as log:
                for line in log:
                    if line.startswith("capsudod: listening on "):
                        self.endpoint = line.removeprefix("capsudod: listening on ").strip()
                        return self
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError("capsudod did not listen on tcp://127.0.0.1:0")
            time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def capsudo_starter(endpoint: str):
    def start(stdout: int):
        return subprocess.Popen([CAPSUDO, "-S", endpoint, "--", *HEAD], stdout=stdout, stdin=subprocess.DEVNULL).wait

    return start


def pipe_starter():
    def start(stdout: int):
        port = str(free_port())
        if SOCAT:
            sender_argv = ["sh", "-c", f'{" ".join(HEAD)} | exec socat -u STDIN TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr']
            receiver_argv = [SOCAT, "-u", f"TCP:127.0.0.1:{port},retry=500,interval=0.01", "STDOUT"]
        else:
            sender_argv = ["sh", "-c", f'{" ".join(HEAD)} | exec "$0" -c "$1" {port}', PYTHON, _PY_SENDER]
            receiver_argv = [PYTHON, "-c", _PY_RECEIVER, port]
        sender = subprocess.Popen(sender_argv, stdin=subprocess.DEVNULL)
        receiver = subprocess.Popen(receiver_argv, stdin=subprocess.DEVNULL, stdout=stdout)

        def wait() -> int:
            return receiver.wait() or sender.wait()

        return wait

    return start


def rate(seconds: float) -> str:
    return f"{SIZE / seconds / 1e6:.0f} MB/s"


def main() -> int:
    repetitions = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 40
    verdict = Verdict("1 GiB through tcp:// on loopback, and `true` on tcp:// beside unix")
    baseline = "plain TCP pipe (socat)" if SOCAT else "plain TCP pipe (two Python copy loops; no socat here)"
    subject = "capsudo -S tcp://127.0.0.1:PORT -- head"
    with NetworkDaemon() as network, Daemon() as local:
        starters = {subject: capsudo_starter(network.endpoint), baseline: pipe_starter()}
        timings = {name: [] for name in starters}
        order = list(starters)
        shuffle = random.Random(5)
        for _ in range(repetitions):
            shuffle.shuffle(order)
            for name in order:
                timings[name].append(through_pipe(starters[name]))

        commands = {
            "capsudo -S tcp://127.0.0.1:PORT -- true": [CAPSUDO, "-S", network.endpoint, "--", "true"],
            "capsudo -S /path/to/socket -- true": [CAPSUDO, "-S", local.socket, "--", "true"],
        }
        latencies = {name: [] for name in commands}
        names = list(commands)
        for name in names:  # unmeasured: page cache, the daemons' first sessions
            spawn_and_wait(commands[name], stdin=subprocess.DEVNULL)
        for _ in range(rounds):
            shuffle.shuffle(names)
            for name in names:
                latencies[name].append(spawn_and_wait(commands[name], stdin=subprocess.DEVNULL))

    rows = []
    for name in starters:
        end_to_end = [t.end_to_end for t in timings[name]]
        transfer = [t.transfer for t in timings[name]]
        rows.append([name, f"{median(end_to_end):.2f} s", rate(median(end_to_end)),
                     f"{median(transfer):.2f} s", rate(median(transfer))])
    print(table([f"1 GiB into a pipe, medians of {repetitions}", "end to end", "rate", "transfer", "rate"], rows))
    print()
    print(table([f"{rounds} runs each", "median", "p90"],
                [[name, ms(median(values)), ms(percentile(values, 0.9))] for name, values in latencies.items()]))

    transfer = median([t.transfer for t in timings[subject]])
    verdict.check(f"{subject}: transfer >= {TARGET_RATE / 1e6:.0f} MB/s", rate(transfer), SIZE / transfer >= TARGET_RATE)
    return verdict.finish()


if __name__ == "__main__":
    sys.exit(main())
