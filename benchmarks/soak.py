"""The soak: 10,000 sessions against one daemon, and what they leave behind.

Starts a daemon, runs a warm-up (imports, caches and trio's thread pool
settle), reads the daemon's VmRSS and descriptor count, then runs SESSIONS
more through the library API, reading again after every 2,000. The mix:
mostly `true`; one in ten `false` (a failing status comes back); one in ten
a program that does not exist (the refusal path); one in ten `true` in an
interactive session (a pty allocated and relayed by the daemon). At every
reading it looks in /proc for children of the daemon: a child in state Z is
a program the daemon failed to reap.

Targets: VmRSS grew by less than 5 MB (5,000,000 bytes) after the warm-up;
the descriptor count is the same as after the warm-up; no zombie child; and
every session ended with the status its program gives.

    .venv/bin/python benchmarks/soak.py [SESSIONS]
"""

from __future__ import annotations

import os
import sys
import threading
import time

from _harness import Daemon, Verdict, table
from memory import descriptors, resident_kib

from capsudo.core import build_request, run, run_unix_session

WARMUP = 300
THREADS = 4
READING_EVERY = 2000
LIMIT_BYTES = 5_000_000


def children(pid: int) -> list[tuple[int, str]]:
    """(pid, state) of every process whose parent is pid."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # it ended while we looked
        state, parent = fields[0], int(fields[1])
        if parent == pid:
            found.append((int(entry), state))
    return found


def settled(pid: int, idle_fds: int | None) -> tuple[int, int, list[tuple[int, str]]]:
    """(VmRSS KiB, descriptors, children) once the last sessions have closed.

    A client returns on Exit, a moment before the daemon closes its end and
    reaps its program, so the readings are repeated until they stop changing.
    """
    deadline = time.monotonic() + 5
    previous = (descriptors(pid), len(children(pid)))
    while time.monotonic() < deadline:
        time.sleep(0.1)
        current = (descriptors(pid), len(children(pid)))
        if current == previous and current[1] == 0 and (idle_fds is None or current[0] == idle_fds):
            break
        previous = current
    return resident_kib(pid), descriptors(pid), children(pid)


def expected_status(number: int) -> tuple[list[str], int, bool]:
    """(argv, the status it must end with, interactive) for session number."""
    if number % 10 == 9:
        return ["capsudo-no-such-program"], 127, False
    if number % 10 == 4:
        return ["false"], 1, False
    return ["true"], 0, number % 10 == 7


def sessions(endpoint: str, first: int, count: int, devnull: int) -> int:
    """Run sessions first..first+count; how many went wrong.

    Plain sessions come from THREADS threads; the interactive ones from the
    main thread meanwhile, because an interactive client installs signal
    handlers (to restore the terminal), which only the main thread may do.
    A session that raises counts as wrong, and the first failure is shown.
    """
    lock = threading.Lock()
    numbers = range(first, first + count)
    plain = iter([number for number in numbers if not expected_status(number)[2]])
    state = {"wrong": 0, "first failure": None}

    def one(number: int) -> None:
        argv, status, interactive = expected_status(number)
        try:
            if interactive:
                request = build_request(argv, interactive=True, stdio=(devnull, devnull, devnull))
                result = run_unix_session(endpoint, request)
            else:
                result = run(argv, endpoint=endpoint, stdin=devnull, stdout=devnull, stderr=devnull)
            failure = None if result.status == status else f"{argv}: status {result.status}, {result.errors}"
        except Exception as exc:
            failure = f"{argv}: {type(exc).__name__}: {exc}"
        if failure:
            with lock:
                state["wrong"] += 1
                if state["first failure"] is None:
                    state["first failure"] = failure
                    print(f"session {number} went wrong: {failure}", file=sys.stderr)

    def worker() -> None:
        while True:
            with lock:
                number = next(plain, None)
            if number is None:
                return
            one(number)

    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for number in numbers:
        if expected_status(number)[2]:
            one(number)
    for thread in threads:
        thread.join()
    return state["wrong"]


def main() -> int:
    total = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    verdict = Verdict(f"soak: {total} sessions against one daemon")
    devnull = os.open(os.devnull, os.O_RDWR)
    readings: list[list[str]] = []
    zombies_seen: set[int] = set()
    with Daemon() as daemon:
        wrong = sessions(daemon.socket, 0, WARMUP, devnull)
        before_rss, before_fds, _ = settled(daemon.pid, None)
        readings.append([f"after warm-up ({WARMUP})", "+0 KiB", f"{before_rss} KiB", str(before_fds), "0", "-"])
        done = 0
        start = time.perf_counter()
        while done < total:
            step = min(READING_EVERY, total - done)
            step_start = time.perf_counter()
            wrong += sessions(daemon.socket, WARMUP + done, step, devnull)
            rate = step / (time.perf_counter() - step_start)
            done += step
            rss, fds, kids = settled(daemon.pid, before_fds)
            zombies_seen.update(pid for pid, state in kids if state == "Z")
            readings.append(
                [f"after warm-up + {done}", f"{rss - before_rss:+d} KiB", f"{rss} KiB", str(fds), str(len(kids)), f"{rate:.0f}/s"]
            )
        elapsed = time.perf_counter() - start
        after_rss, after_fds, after_children = rss, fds, kids
    os.close(devnull)

    print(table(["reading", "RSS since warm-up", "VmRSS", "descriptors", "children", "sessions/s"], readings))
    print(f"\n{total} sessions in {elapsed:.1f} s ({total / elapsed:.0f}/s): plain ones from {THREADS} threads,"
          " interactive ones from the main thread")
    growth = (after_rss - before_rss) * 1024
    verdict.check("VmRSS growth < 5 MB", f"{growth / 1e6:+.2f} MB ({before_rss} -> {after_rss} KiB)", growth < LIMIT_BYTES)
    verdict.check("descriptor count unchanged", f"{before_fds} -> {after_fds}", after_fds == before_fds)
    verdict.check(
        "no zombie child of the daemon",
        f"{len(zombies_seen)} zombies seen, {len(after_children)} children at the end",
        not zombies_seen and not any(state == "Z" for _, state in after_children),
    )
    verdict.check("every session ended with its program's status", f"{wrong} unexpected", wrong == 0)
    return verdict.finish()


if __name__ == "__main__":
    sys.exit(main())
