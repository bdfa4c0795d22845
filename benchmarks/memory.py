"""The daemon's memory and descriptors over 5000 sessions.

Starts a daemon, runs a warm-up of WARMUP sessions (so that imports, caches
and trio's thread pool have settled), reads VmRSS from /proc/PID/status and
counts /proc/PID/fd, then runs SESSIONS more and reads them again, with a
reading after every thousand in between. The sessions come from 4 threads
through the library API; every tenth asks for a program that does not exist,
so the refusal path is exercised too.

Targets: VmRSS grew by less than 5 MB (5,000,000 bytes), and the descriptor
count is the same as before.

    .venv/bin/python benchmarks/memory.py [SESSIONS]
"""

from __future__ import annotations

import os
import sys
import threading
import time

from _harness import Daemon, Verdict, table

from capsudo.core import run

WARMUP = 300
THREADS = 4
REFUSED_EVERY = 10
LIMIT_BYTES = 5_000_000


def resident_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def settled(pid: int, idle_fds: int | None) -> tuple[int, int]:
    """(VmRSS KiB, descriptors) once the daemon has finished closing sessions.

    A client returns on Exit, just before the daemon closes its end, so the
    count is read again until it stops changing (or matches the idle count).
    """
    deadline = time.monotonic() + 3
    previous = descriptors(pid)
    while time.monotonic() < deadline:
        time.sleep(0.1)
        count = descriptors(pid)
        if count == previous and (idle_fds is None or count == idle_fds):
            break
        previous = count
    return resident_kib(pid), descriptors(pid)


def sessions(endpoint: str, count: int, devnull: int) -> int:
    """Run count sessions from THREADS threads; the number that went wrong."""
    lock = threading.Lock()
    state = {"next": 0, "wrong": 0}

    def worker() -> None:
        while True:
            with lock:
                number = state["next"]
                if number >= count:
                    return
                state["next"] += 1
            refused = number % REFUSED_EVERY == REFUSED_EVERY - 1
            argv = ["capsudo-no-such-program"] if refused else ["true"]
            result = run(argv, endpoint=endpoint, stdin=devnull, stdout=devnull, stderr=devnull)
            expected = 127 if refused else 0
            if result.status != expected:
                with lock:
                    state["wrong"] += 1

    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return state["wrong"]


def main() -> int:
    total = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    verdict = Verdict(f"the daemon's memory and descriptors over {total} sessions")
    devnull = os.open(os.devnull, os.O_RDWR)
    readings: list[list[str]] = []
    wrong = 0
    with Daemon() as daemon:
        start_rss, start_fds = settled(daemon.pid, None)
        readings.append(["just started", "0", f"{start_rss} KiB", str(start_fds)])
        wrong += sessions(daemon.socket, WARMUP, devnull)
        before_rss, before_fds = settled(daemon.pid, None)
        readings.append([f"after warm-up ({WARMUP})", "0", f"{before_rss} KiB", str(before_fds)])
        done = 0
        while done < total:
            step = min(1000, total - done)
            wrong += sessions(daemon.socket, step, devnull)
            done += step
            rss, fds = settled(daemon.pid, before_fds)
            readings.append([f"after warm-up + {done}", f"{rss - before_rss:+d} KiB", f"{rss} KiB", str(fds)])
        after_rss, after_fds = rss, fds
    os.close(devnull)

    print(table(["reading", "RSS since warm-up", "VmRSS", "descriptors"], readings))
    if wrong:
        print(f"\n{wrong} sessions ended with an unexpected status")
    growth = (after_rss - before_rss) * 1024
    verdict.check("VmRSS growth < 5 MB", f"{growth / 1e6:+.2f} MB ({before_rss} -> {after_rss} KiB)", growth < LIMIT_BYTES)
    verdict.check("descriptor count unchanged", f"{before_fds} -> {after_fds}", after_fds == before_fds)
    verdict.check("every session ended as expected", f"{wrong} unexpected", wrong == 0)
    return verdict.finish()


if __name__ == "__main__":
    sys.exit(main())
