"""1 GiB of stdout through a session, against the same command without capsudo.

`capsudo -- head -c 1073741824 /dev/zero` (the real client process) and the
same session through the library API (`capsudo.core.run`), with stdout once
a pipe that this script drains and once /dev/null, interleaved with
`head -c 1073741824 /dev/zero` started directly with the same stdout.

The program writes straight into the descriptor the client passed, so the
data path is the very same pipe; what a session adds is a fixed cost at the
start (the client's start-up and the handshake, measured on their own by
startup.py and library_session.py). Two figures are therefore taken:

- end to end: from spawning (or calling run) until the output is all read
  and the status is in;
- transfer (pipe only): from the first byte read to end-of-file, which is
  what "throughput" means for the data path.

Targets (medians, within 5% of head alone):
- the transfer through a pipe, for the client process and the library API;
- end to end into /dev/null, for the library API. Into /dev/null head moves
  1 GiB in about 0.12 s here, so the client process's fixed start-up
  (20-30 ms) is a fifth of that run; its row is shown for what it is.

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
TOLERANCE = 0.05
HEAD = ["head", "-c", str(SIZE), "/dev/zero"]
CHUNK = 1 << 20
CLIENT = "capsudo -- head"
DIRECT = "head (no capsudo)"
LIBRARY = "run(head) (library API)"


class Timing:
    def __init__(self, end_to_end: float, transfer: float | None = None) -> None:
        self.end_to_end = end_to_end
        self.transfer = transfer


def drain(fd: int) -> tuple[int, float | None, float]:
    """Read fd to its end into one reused buffer: (bytes, first byte at, end at)."""
    view = memoryview(bytearray(CHUNK))
    total = 0
    first = None
    while True:
        count = os.readv(fd, [view])
        if not count:
            return total, first, time.perf_counter()
        if first is None:
            first = time.perf_counter()
        total += count


def through_pipe(start_session) -> Timing:
    """start_session(write_end) starts the writer and returns a wait() for it."""
    read_end, write_end = os.pipe()
    outcome: list = []
    reader = threading.Thread(target=lambda: outcome.append(drain(read_end)))
    reader.start()
    start = time.perf_counter()
    try:
        wait = start_session(write_end)
    finally:
        os.close(write_end)  # the writer holds its own copy now
    status = wait()
    reader.join()
    done = time.perf_counter()
    os.close(read_end)
    received, first, end = outcome[0]
    if status != 0 or received != SIZE:
        raise RuntimeError(f"status {status} after {received} bytes")
    return Timing(done - start, end - first)


def into_devnull(start_session) -> Timing:
    with open(os.devnull, "wb") as devnull:
        start = time.perf_counter()
        status = start_session(devnull.fileno())()
        elapsed = time.perf_counter() - start
    if status != 0:
        raise RuntimeError(f"status {status}")
    return Timing(elapsed)


def process_starter(argv: list[str]):
    def start(stdout: int):
        return subprocess.Popen(argv, stdout=stdout, stdin=subprocess.DEVNULL).wait

    return start


def library_starter(endpoint: str):
    def start(stdout: int):
        # run() blocks until the status is in; the daemon holds its own copy
        # of stdout once the handshake is done, so calling it here and
        # returning its status afterwards is the same as starting and waiting.
        with open(os.devnull, "rb") as devnull:
            result = run(HEAD, endpoint=endpoint, stdin=devnull, stdout=stdout)
        if result.errors:
            raise RuntimeError(f"library session: {result}")
        return lambda: result.status

    return start


def seconds(values: list[float]) -> str:
    return f"{median(values):.3f} s"


def main() -> int:
    repetitions = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    verdict = Verdict("1 GiB of stdout through a session")
    ways = [CLIENT, DIRECT, LIBRARY]
    kinds = ["pipe", "/dev/null"]
    timings: dict[tuple[str, str], list[Timing]] = {(way, kind): [] for way in ways for kind in kinds}
    with Daemon() as daemon:
        starters = {
            CLIENT: process_starter([CAPSUDO, "-S", daemon.socket, "--", *HEAD]),
            DIRECT: process_starter(HEAD),
            LIBRARY: library_starter(daemon.socket),
        }
        measure = {"pipe": through_pipe, "/dev/null": into_devnull}
        order = [(way, kind) for way in ways for kind in kinds]
        # One unmeasured round first: page cache, the daemon's first session.
        for way, kind in order:
            measure[kind](starters[way])
        shuffle = random.Random(3)
        for repetition in range(3 * repetitions):
            shuffle.shuffle(order)
            for way, kind in order:
                if kind == "pipe" and repetition % 3:
                    continue
                timings[(way, kind)].append(measure[kind](starters[way]))

    def column(way: str, kind: str, what: str) -> list[float]:
        return [getattr(timing, what) for timing in timings[(way, kind)]]

    rows = []
    for kind in kinds:
        base_e2e = median(column(DIRECT, kind, "end_to_end"))
        base_transfer = median(column(DIRECT, kind, "transfer")) if kind == "pipe" else None
        for way in ways:
            e2e = column(way, kind, "end_to_end")
            row = [f"{way} > {kind}", seconds(e2e), f"{(median(e2e) / base_e2e - 1) * 100:+.1f}%"]
            if kind == "pipe":
                transfer = column(way, kind, "transfer")
                row += [
                    seconds(transfer),
                    f"{SIZE / median(transfer) / 1e9:.2f} GB/s",
                    f"{(median(transfer) / base_transfer - 1) * 100:+.1f}%",
                ]
            else:
                row += ["-", f"{SIZE / median(e2e) / 1e9:.2f} GB/s", "-"]
            rows.append(row)
    header = [f"1 GiB, medians ({repetitions} runs to a pipe, {3 * repetitions} to /dev/null)"]
    print(table([*header, "end to end", "vs head", "transfer", "rate", "vs head"], rows))

    for way in (CLIENT, LIBRARY):
        excess = median(column(way, "pipe", "transfer")) / median(column(DIRECT, "pipe", "transfer")) - 1
        verdict.check(f"{way} > pipe: transfer within {TOLERANCE:.0%}", f"{excess * 100:+.1f}%", excess <= TOLERANCE)
    excess = median(column(LIBRARY, "/dev/null", "end_to_end")) / median(column(DIRECT, "/dev/null", "end_to_end")) - 1
    verdict.check(f"{LIBRARY} > /dev/null: end to end within {TOLERANCE:.0%}", f"{excess * 100:+.1f}%", excess <= TOLERANCE)
    return verdict.finish()


if __name__ == "__main__":
    sys.exit(main())
