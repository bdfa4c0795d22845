"""Output through an interactive session's pty, beside a plain pty.

Subject: `capsudo -S ENDPOINT -i -- sh -c 'COMMAND'`, where the program
writes into the pty the daemon allocated and the daemon relays the master to
the client's stdout. Baseline, in the same run and interleaved with it:
`script -qfec 'COMMAND' /dev/null`, util-linux's script relaying a pty of its
own, in C. COMMAND is `head -c SIZE /dev/zero`, run twice over:

- cooked: the terminal as a program finds it (OPOST, ONLCR). The kernel's
  output processing, in the writer's own write(2) calls, costs more than
  everything else on the path, so both relays meet the same ceiling;
- raw: `stty raw -echo` first, as a full-screen program does; what is left
  to measure is the relay.

Output goes to /dev/null, or with --pipe into a pipe this script drains and
counts (the count is checked). MB are 10^6 bytes.

Target: capsudo's median at least 150 MB/s in both modes and at least 0.9x
script's median in the same mode.

    .venv/bin/python benchmarks/pty_throughput.py [--repeat N] [--size MiB] [--pipe]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import threading
import time

from _harness import CAPSUDO, Daemon, Verdict, median, table

TARGET_MB_S = 150.0
TARGET_RATIO = 0.9

MODES = {
    "cooked": "head -c {size} /dev/zero",
    "raw": "stty raw -echo; head -c {size} /dev/zero",
}


def _drain(stream, counted: list[int]) -> None:
    total = 0
    while chunk := stream.read(1 << 20):
        total += len(chunk)
    counted.append(total)


def run_once(argv: list[str], size: int, pipe: bool) -> float:
    """Seconds from start to end of one run; checks status and byte count."""
    start = time.perf_counter()
    if pipe:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        counted: list[int] = []
        drainer = threading.Thread(target=_drain, args=(process.stdout, counted))
        drainer.start()
        status = process.wait()
        drainer.join()
        elapsed = time.perf_counter() - start
        if counted[0] != size:
            raise RuntimeError(f"{argv}: {counted[0]} bytes arrived, {size} expected")
    else:
        status = subprocess.call(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        elapsed = time.perf_counter() - start
    if status != 0:
        raise RuntimeError(f"{argv} exited with status {status}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs of each command in each mode (default 5)")
    parser.add_argument("--size", type=int, default=512, help="MiB written by each run (default 512)")
    parser.add_argument("--pipe", action="store_true", help="output into a drained pipe instead of /dev/null")
    options = parser.parse_args()
    if shutil.which("script") is None:
        print("util-linux's script is not installed: no baseline to compare with", file=sys.stderr)
        return 2
    size = options.size * 1024 * 1024
    verdict = Verdict(f"interactive output through the pty, {options.size} MiB per run")
    print(f"   output into {'a pipe this script drains' if options.pipe else '/dev/null'}, {options.repeat} runs each")
    print()
    rows = []
    with Daemon() as daemon:
        for mode, template in MODES.items():
            command = template.format(size=size)
            subjects = {
                "capsudo -i": [CAPSUDO, "-S", daemon.socket, "-i", "--", "sh", "-c", command],
                "script": ["script", "-qfec", command, "/dev/null"],
            }
            rates: dict[str, list[float]] = {name: [] for name in subjects}
            for repetition in range(options.repeat):
                # Alternate which goes first, so neither always meets a warm cache.
                order = list(subjects) if repetition % 2 == 0 else list(reversed(subjects))
                for name in order:
                    rates[name].append(size / run_once(subjects[name], size, options.pipe) / 1e6)
            for name, values in rates.items():
                rows.append(
                    [f"{mode}: {name}", f"{median(values):.0f}", f"{max(values):.0f}", f"{min(values):.0f}",
                     " ".join(f"{value:.0f}" for value in values)]
                )
            ours, theirs = median(rates["capsudo -i"]), median(rates["script"])
            verdict.check(f"{mode}: capsudo -i >= {TARGET_MB_S:.0f} MB/s", f"{ours:.0f} MB/s", ours >= TARGET_MB_S)
            verdict.check(
                f"{mode}: capsudo -i >= {TARGET_RATIO}x script", f"{ours / theirs:.2f}x ({theirs:.0f} MB/s)",
                ours >= TARGET_RATIO * theirs,
            )
    print(table(["MB/s", "median", "best", "worst", "runs"], rows))
    return verdict.finish()


if __name__ == "__main__":
    sys.exit(main())
