"""A session from the library API, one process, one session after another.

`capsudo.core.run(["true"], endpoint=...)` in a loop, interleaved with the
baseline: starting the same program here without capsudo
(`subprocess.run(["true"])` from the same process). The difference is what
a session costs beyond running the program: connecting, the handshake,
the daemon's spawn and the exit status coming back. Target: median at most
2 ms.

    .venv/bin/python benchmarks/library_session.py [SESSIONS]
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from _harness import TRUE, Daemon, Verdict, median, ms, percentile, table

from capsudo.core import run

SESSIONS = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
WARMUP = 50
TARGET = 0.002


def main() -> int:
    verdict = Verdict("one session through the library API")
    devnull = os.open(os.devnull, os.O_RDWR)
    session_times: list[float] = []
    local_times: list[float] = []
    with Daemon() as daemon:
        for number in range(WARMUP + SESSIONS):
            start = time.perf_counter()
            result = run(["true"], endpoint=daemon.socket, stdin=devnull, stdout=devnull, stderr=devnull)
            session = time.perf_counter() - start
            if result.status != 0 or result.errors:
                raise RuntimeError(f"session failed: {result}")

            start = time.perf_counter()
            subprocess.run([TRUE], stdin=devnull, stdout=devnull, stderr=devnull, check=True)
            local = time.perf_counter() - start
            if number >= WARMUP:
                session_times.append(session)
                local_times.append(local)
    os.close(devnull)

    print(
        table(
            [f"{SESSIONS} times each, interleaved", "median", "p90"],
            [
                ['run(["true"], endpoint=ENDPOINT)', ms(median(session_times)), ms(percentile(session_times, 0.9))],
                ['subprocess.run(["true"]) (no capsudo)', ms(median(local_times)), ms(percentile(local_times, 0.9))],
            ],
        )
    )
    subject = median(session_times)
    verdict.check(f"median <= {ms(TARGET)}", ms(subject), subject <= TARGET)
    return verdict.finish()


if __name__ == "__main__":
    sys.exit(main())
