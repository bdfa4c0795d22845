"""1 GiB of stdout through a session, against the same command without capsudo.

`capsudo -- head -c 1073741824 /dev/zero` (the real client process), with its
stdout once a pipe that this script drains and once /dev/null, interleaved
with `head -c 1073741824 /dev/zero` started directly with the same stdout.
The program writes straight into the descriptor the client passed, so the
data path is the same; what differs is the session's fixed cost (the
client's start-up and the handshake, measured on its own by startup.py).
The same session through the library API (`capsudo.core.run`, no client
process) is shown too.

Targets: the median through a session within 5% of the median without,
on the pipe (through the client process and through the library API) and
on /dev/null. On /dev/null head moves 1 GiB in about 0.13 s here, so the
client's fixed start-up (about 30 ms, see startup.py) is a fifth of it: the
/dev/null target is checked on the library API's session, whose fixed cost
is about 2 ms, and the client's /dev/null row is shown for what it is.

    .venv/bin/python benchmarks/throughput.py [REPETITIONS]

/dev/null runs are short and noisy, so they get three times the repetitions.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time

from _harness import CAPSUDO, Daemon, Verdict, median, table

from capsudo.core import run

SIZE = 1 << 30
REPETITIONS = int(sys.argv[1]) if len(sys.argv) > 1 else 11
TOLERANCE = 0.05
HEAD = ["head", "-c", str(SIZE), "/dev/zero"]
CHUNK = 1 << 20


def drain(fd: int) -> int:
    """Read fd to its end into one reused buffer; the byte count."""
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    total = 0
    while True:
        count = os.readv(fd, [view])
        if not count:
            return total
        total += count


def through_process(argv: list[str], to_pipe: bool) -> float:
    """Seconds from spawning argv until its output is all read and it is reaped."""
    if not to_pipe:
        with open(os.devnull, "wb") as devnull:
            start = time.perf_counter()
            status = subprocess.Popen(argv, stdout=devnull, stdin=subprocess.DEVNULL).wait()
            elapsed = time.perf_counter() - start
        if status != 0:
            raise RuntimeError(f"{argv} exited with status {status}")
        return elapsed
    read_end, write_end = os.pipe()
    try:
        start = time.perf_counter()
        process = subprocess.Popen(argv, stdout=write_end, stdin=subprocess.DEVNULL)
        os.close(write_end)
        write_end = -1
        received = drain(read_end)
        status = process.wait()
        elapsed = time.perf_counter() - start
    finally:
        os.close(read_end)
        if write_end != -1:
            os.close(write_end)
    if status != 0 or received != SIZE:
        raise RuntimeError(f"{argv} exited with status {status} after {received} bytes")
    return elapsed


def through_library(endpoint: str, to_pipe: bool) -> float:
    """The same session from this process through capsudo.core.run."""
    if not to_pipe:
        with open(os.devnull, "r+b") as devnull:
            start = time.perf_counter()
            result = run(HEAD, endpoint=endpoint, stdin=devnull, stdout=devnull)
            elapsed = time.perf_counter() - start
        if result.status != 0:
            raise RuntimeError(f"library session: {result}")
        return elapsed
    read_end, write_end = os.pipe()
    received = []
    # The drain runs beside the blocking run(); our copy of the write end
    # is closed as soon as the daemon holds its own, so end-of-file comes
    # when the program exits.
    reader = threading.Thread(target=lambda: received.append(drain(read_end)))
    start = time.perf_counter()
    reader.start()
    try:
        with open(os.devnull, "rb") as devnull:
            result = run(HEAD, endpoint=endpoint, stdin=devnull, stdout=write_end)
    finally:
        os.close(write_end)
    reader.join()
    elapsed = time.perf_counter() - start
    os.close(read_end)
    if result.status != 0 or received != [SIZE]:
        raise RuntimeError(f"library session: {result}, {received} bytes")
    return elapsed


def rate(seconds: float) -> str:
    return f"{SIZE / seconds / 1e9:.2f} GB/s"


def main() -> int:
    verdict = Verdict("1 GiB of stdout through a session")
    kinds = ["pipe", "/dev/null"]
    ways = ["capsudo -- head", "head (no capsudo)", "run(head) (library API)"]
    times: dict[tuple[str, str], list[float]] = {(way, kind): [] for way in ways for kind in kinds}
    with Daemon() as daemon:
        subjects = {
            "capsudo -- head": lambda to_pipe: through_process([CAPSUDO, "-S", daemon.socket, "--", *HEAD], to_pipe),
            "head (no capsudo)": lambda to_pipe: through_process(HEAD, to_pipe),
            "run(head) (library API)": lambda to_pipe: through_library(daemon.socket, to_pipe),
        }
        order = [(way, kind) for way in ways for kind in kinds]
        shuffle = random.Random(3)
        # One unmeasured round first: page cache, the daemon's first session.
        for way, kind in order:
            subjects[way](kind == "pipe")
        for repetition in range(3 * REPETITIONS):
            shuffle.shuffle(order)
            for way, kind in order:
                if kind == "pipe" and repetition % 3:
                    continue
                times[(way, kind)].append(subjects[way](kind == "pipe"))

    rows = []
    for kind in kinds:
        base = median(times[("head (no capsudo)", kind)])
        for way in ways:
            values = times[(way, kind)]
            rows.append(
                [
                    f"{way} > {kind}",
                    f"{median(values):.3f} s",
                    f"{min(values):.3f} s",
                    f"{max(values):.3f} s",
                    rate(median(values)),
                    f"{(median(values) / base - 1) * 100:+.1f}%",
                ]
            )
    header = [f"1 GiB, interleaved ({REPETITIONS} runs to a pipe, {3 * REPETITIONS} to /dev/null)"]
    print(table([*header, "median", "min", "max", "rate", "vs head"], rows))

    gated = [("capsudo -- head", "pipe"), ("run(head) (library API)", "pipe"), ("run(head) (library API)", "/dev/null")]
    for way, kind in gated:
        subject = median(times[(way, kind)])
        base = median(times[("head (no capsudo)", kind)])
        excess = subject / base - 1
        verdict.check(f"{way} > {kind} within {TOLERANCE:.0%} of head > {kind}", f"{excess * 100:+.1f}%", excess <= TOLERANCE)
    return verdict.finish()


if __name__ == "__main__":
    sys.exit(main())
