"""Another peer's `capsudo -- true` while one uid holds all it can; and what unfinished handshakes cost.

Two daemons with default flags, side by side. Against the attacked one, an
unprivileged user (the holder, benchmarks/_holder.py, run with setpriv)
first asks for 256 sessions of `sleep` (those past --max-sessions-per-peer
are refused), then opens 1000 idle connections. Meanwhile root, another
uid, runs `capsudo -- true` against each daemon in turn, interleaved.
Target: median and max under 50 ms against the attacked daemon. The idle
connections are dropped at the handshake timeout (10 s): the runs are done
well before.

Then the memory bound, on fresh daemons whose --max-handshakes-per-peer is
raised to --max-handshakes so that one holder can fill them all (and a
handshake timeout of 120 s, so none is cut off while measured): 64
connections each send a Secret of exactly --max-bytes and never End; then 4
each send 65535 short Args and one long one, --max-bytes in all (the most
objects a request can make the daemon keep). The growth in VmRSS per held
handshake is printed beside the bound docs/threat-model.md states:
max-handshakes x (1.5 x max-bytes + 96 B x max-items + 1 MiB).

    .venv/bin/python benchmarks/fairness.py [RUNS] [USER]   (as root; USER default nobody)
"""

from __future__ import annotations

import json
import os
import pwd
import select
import subprocess
import sys
import time
from contextlib import ExitStack, contextmanager

from _harness import CAPSUDO, PYTHON, Daemon, Verdict, median, ms, table

RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 20
USER = sys.argv[2] if len(sys.argv) > 2 else "nobody"
HOLDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_holder.py")
TARGET = 0.050
MAX_HANDSHAKES = 64
MAX_BYTES = 4 * 1024 * 1024
MAX_ITEMS = 65536
BOUND = MAX_HANDSHAKES * (MAX_BYTES * 3 // 2 + 96 * MAX_ITEMS + 1024 * 1024)


@contextmanager
def holder(socket_path: str, count: int, mode: str, argument: str = "", settle: float = 2.0):
    entry = pwd.getpwnam(USER)
    process = subprocess.Popen(
        ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--clear-groups",
         PYTHON, HOLDER, socket_path, str(count), str(settle), mode, argument],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )
    try:
        ready, _, _ = select.select([process.stdout], [], [], settle + 60)
        line = process.stdout.readline() if ready else b""
        if not line:
            raise RuntimeError(f"the holder ({mode}) reported nothing")
        yield json.loads(line)
    finally:
        process.stdin.close()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def open_daemon(*args: str) -> Daemon:
    daemon = Daemon("-m", "0777", *args)
    return daemon


def served(socket_path: str) -> float:
    start = time.perf_counter()
    result = subprocess.run([CAPSUDO, "-S", socket_path, "--", "true"], capture_output=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"capsudo -- true failed: {result.stderr.decode().strip()}")
    return elapsed


def vm_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def memory_held(count: int, mode: str, argument: str, *, settle: float, per_peer: int = MAX_HANDSHAKES):
    """VmRSS growth of a fresh daemon while `count` (+8 refused) connections hold what `mode` sends."""
    with open_daemon("--max-handshakes-per-peer", str(per_peer), "--max-handshakes", str(per_peer),
                     "--handshake-timeout", "120") as daemon:
        os.chmod(daemon.directory, 0o755)
        served(daemon.socket)
        before = vm_rss(daemon.pid)
        with holder(daemon.socket, count + 8, mode, argument, settle=settle) as report:
            growth = vm_rss(daemon.pid) - before
    return growth, report


def describe(report: dict) -> str:
    refusals = "; ".join(f"{count} x {text!r}" for text, count in report["refusals"].items())
    return f"{report['opened']} opened, {report['held']} held; refused: {refusals or 'none'}"


def main() -> int:
    if os.geteuid() != 0:
        sys.stderr.write("fairness.py runs as root: the holder is another user, started with setpriv\n")
        return 2
    verdict = Verdict("fairness: another uid served while one uid holds all it may")
    with ExitStack() as stack:
        quiet = stack.enter_context(open_daemon())
        attacked = stack.enter_context(open_daemon())
        for daemon in (quiet, attacked):
            os.chmod(daemon.directory, 0o755)
        sessions = stack.enter_context(holder(attacked.socket, 256, "sleep", "120", settle=3.0))
        idle = stack.enter_context(holder(attacked.socket, 1000, "idle", settle=1.0))
        rss_attacked = vm_rss(attacked.pid)
        times: dict[str, list[float]] = {"quiet": [], "attacked": []}
        for _ in range(RUNS):
            times["quiet"].append(served(quiet.socket))
            times["attacked"].append(served(attacked.socket))
    print(f"holder, 256 sessions of sleep: {describe(sessions)}")
    print(f"holder, 1000 idle connections: {describe(idle)}")
    print(f"attacked daemon's VmRSS meanwhile: {rss_attacked / 2**20:.0f} MiB")
    print()
    rows = [[f"`capsudo -- true`, {name} daemon", ms(median(values)), ms(max(values))] for name, values in times.items()]
    print(table([f"{RUNS} runs each, interleaved", "median", "max"], rows))
    worst = times["attacked"]
    verdict.check("another uid's `capsudo -- true`, median and max < 50 ms",
                  f"{ms(median(worst))}, {ms(max(worst))}", max(worst) < TARGET)

    print()
    # One message each: the bytes a handshake may keep, in one Secret that fits exactly.
    secrets_growth, report = memory_held(MAX_HANDSHAKES, "secret", str(MAX_BYTES), settle=4.0)
    print(f"holder, {MAX_HANDSHAKES + 8} Secrets of --max-bytes: {describe(report)}")
    per_handshake = secrets_growth / max(report["held"], 1)
    held_all = report["held"] == MAX_HANDSHAKES
    # Many items as well: each a Python object the request keeps. Fewer
    # connections, since 65536 messages take the daemon a while each.
    fill_count = 4
    fill_growth, report = memory_held(fill_count, "fill", str(MAX_BYTES), settle=20.0, per_peer=fill_count)
    print(f"holder, {fill_count + 8} connections of 65535 Args and one long one: {describe(report)}")
    per_full = fill_growth / max(report["held"], 1)
    print(f"VmRSS growth per handshake held: {per_handshake / 2**20:.1f} MiB with one Secret of --max-bytes, "
          f"{per_full / 2**20:.1f} MiB with --max-items items in --max-bytes")
    verdict.check(f"VmRSS growth with {MAX_HANDSHAKES} handshakes of --max-bytes < {BOUND / 2**20:.0f} MiB",
                  f"{secrets_growth / 2**20:.0f} MiB", secrets_growth < BOUND and held_all)
    verdict.check(f"{MAX_HANDSHAKES} x growth per full handshake (items) < {BOUND / 2**20:.0f} MiB",
                  f"{MAX_HANDSHAKES * per_full / 2**20:.0f} MiB", MAX_HANDSHAKES * per_full < BOUND and report["held"] == fill_count)
    return verdict.finish()


if __name__ == "__main__":
    sys.exit(main())
