"""A session with captured output three ways, side by side: the async library, the sync library, the command line.

Each subject runs `echo hi` through one Unix endpoint and keeps its output:
`await run_async(..., capture_output=True)` inside one trio loop,
`run(..., capture_output=True)` (a trio loop of its own per call, as a
thread of a synchronous program does), and `capsudo -- echo hi` under
`subprocess.run(capture_output=True)`, a process per call as an agent that
shells out pays. Blocks of 20 sessions alternate between the three so that
load hits them alike. No target: the figures are for docs/benchmarks.md.

    .venv/bin/python benchmarks/library_async.py [SESSIONS]
"""

from __future__ import annotations

import subprocess
import sys
import time

import trio
from _harness import CAPSUDO, Daemon, machine, median, ms, percentile, table

from capsudo.core import run, run_async

SESSIONS = int(sys.argv[1]) if len(sys.argv) > 1 else 300
BLOCK = 20
ARGV = ["echo", "hi"]


def main() -> int:
    times: dict[str, list[float]] = {"async": [], "sync": [], "cli": []}
    with Daemon() as daemon:

        async def async_block() -> None:
            for _ in range(BLOCK):
                start = time.perf_counter()
                result = await run_async(ARGV, endpoint=daemon.socket, capture_output=True, check=True)
                times["async"].append(time.perf_counter() - start)
                assert result.stdout == b"hi\n"

        for _ in range(-(-SESSIONS // BLOCK) + 1):  # the first round warms up and is dropped
            trio.run(async_block)
            for _ in range(BLOCK):
                start = time.perf_counter()
                result = run(ARGV, endpoint=daemon.socket, capture_output=True, check=True)
                times["sync"].append(time.perf_counter() - start)
                assert result.stdout == b"hi\n"
            for _ in range(BLOCK):
                start = time.perf_counter()
                done = subprocess.run([CAPSUDO, "-S", daemon.socket, "-n", "--", *ARGV], capture_output=True,
                                      stdin=subprocess.DEVNULL, check=True)
                times["cli"].append(time.perf_counter() - start)
                assert done.stdout == b"hi\n"
    figures = {name: values[BLOCK:] for name, values in times.items()}
    print(machine())
    print(table(
        [f"{len(figures['async'])} sessions each of `echo hi`, output captured", "median", "p90"],
        [
            ["await run_async(argv, capture_output=True), one trio loop", ms(median(figures["async"])),
             ms(percentile(figures["async"], 0.9))],
            ["run(argv, capture_output=True), a loop per call", ms(median(figures["sync"])),
             ms(percentile(figures["sync"], 0.9))],
            ["subprocess.run([capsudo, -S, ENDPOINT, --, *argv], capture_output=True)", ms(median(figures["cli"])),
             ms(percentile(figures["cli"], 0.9))],
        ],
    ))
    return 0


if __name__ == "__main__":
    sys.exit(main())
