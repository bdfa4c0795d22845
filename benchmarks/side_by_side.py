"""The figures of issue 18's table, each beside its baseline in one run, and beside another implementation.

Every figure is measured for this checkout's `capsudo`/`capsudod` and,
with --other-capsudo and --other-capsudod (say, capsudo-rs built from its
source, or an older checkout's commands), for those too, in the same run,
round by round, the implementations and the baselines interleaved and
their order rotated, so that load on a shared machine hits all alike.
Each implementation gets daemons of its own, started as `capsudod -S
ENDPOINT`: one on a Unix socket, one on tcp://127.0.0.1:PORT.

- start-up: `capsudo -S /unix/socket -- true`, `capsudo -S tcp://… -- true`
  and a refused tcp:// session (no such program), beside `python -c pass`
  on this interpreter; medians of whole processes;
- 1 GiB of `head -c 1073741824 /dev/zero` into a pipe this script drains,
  through a Unix socket session, beside `head` alone into the same kind of
  pipe; and through tcp://, beside `head | socat` to `socat` on loopback
  (skipped without socat); the client's and the daemon's CPU per GiB;
- a pty read at a terminal's pace: `script -qfec "capsudo -S SOCKET -i --
  head -c SIZE /dev/zero" /dev/null` beside `script -qfec "head -c SIZE
  /dev/zero" /dev/null` alone; the daemon's CPU seconds per GB from
  /proc/PID/stat.

    .venv/bin/python benchmarks/side_by_side.py [--rounds N] [--transfers N]
        [--pty-mib MiB] [--other-capsudo PATH --other-capsudod PATH]
        [--only startup,unix,tcp,pty]

No targets are checked here (the single-figure scripts check them); the
table is what docs/benchmarks.md records.
"""

from __future__ import annotations

import argparse
import os
import threading
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from _harness import CAPSUDO, CAPSUDOD, PYTHON, ensure_bytecode, machine, median, stop_process, table
from pty_throughput import _cpu_seconds
from throughput import HEAD, SIZE, drain

SOCAT = shutil.which("socat")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_connectable(address, family: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 15
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with status {process.returncode}")
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(address)
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{process.args} did not listen") from None
        time.sleep(0.02)


class Implementation:
    """One capsudo/capsudod pair and its two daemons."""

    def __init__(self, name: str, client: str, daemon: str, directory: str) -> None:
        self.name, self.client, self.daemon_command = name, client, daemon
        self.socket = os.path.join(directory, f"{name}.sock")
        self.tcp = f"tcp://127.0.0.1:{free_port()}"
        log = open(os.path.join(directory, f"{name}.log"), "wb")
        self.unix_daemon = subprocess.Popen([daemon, "-S", self.socket], stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        self.tcp_daemon = subprocess.Popen([daemon, "-S", self.tcp], stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        wait_connectable(self.socket, socket.AF_UNIX, self.unix_daemon)
        host, port = self.tcp.removeprefix("tcp://").rsplit(":", 1)
        wait_connectable((host, int(port)), socket.AF_INET, self.tcp_daemon)
        time.sleep(0.1)

    def stop(self) -> None:
        stop_process(self.unix_daemon)
        stop_process(self.tcp_daemon)


def timed(argv: list[str], expect_failure: bool = False) -> float:
    start = time.perf_counter()
    status = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
    elapsed = time.perf_counter() - start
    if (status != 0) != expect_failure:
        raise RuntimeError(f"{argv}: status {status}")
    return elapsed


def transfer(argv_writer: list[str], daemon_pid: int | None, receiver: list[str] | None = None) -> tuple[float, float, float]:
    """(MB/s first byte to end, writer-side CPU s/GiB, daemon CPU s/GiB) of
    SIZE bytes into a drained pipe. The writer's CPU is its own and its
    children's (for the client: the client alone)."""
    read_end, write_end = os.pipe()

    outcome: list = []
    reader = threading.Thread(target=lambda: outcome.append(drain(read_end)))
    reader.start()
    daemon_before = _cpu_seconds(daemon_pid) if daemon_pid else 0.0
    if receiver is None:
        process = subprocess.Popen(argv_writer, stdin=subprocess.DEVNULL, stdout=write_end)
        others: list[subprocess.Popen] = []
    else:
        sender = subprocess.Popen(argv_writer, stdin=subprocess.DEVNULL)
        process = subprocess.Popen(receiver, stdin=subprocess.DEVNULL, stdout=write_end)
        others = [sender]
    os.close(write_end)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    for other in others:
        other.wait()
    reader.join()
    os.close(read_end)
    daemon_cpu = (_cpu_seconds(daemon_pid) - daemon_before) if daemon_pid else 0.0
    received, first, end = outcome[0]
    if process.returncode != 0 or received != SIZE:
        raise RuntimeError(f"{argv_writer}: status {process.returncode} after {received} bytes")
    gib = SIZE / (1 << 30)
    return SIZE / (end - first) / 1e6, (usage.ru_utime + usage.ru_stime) / gib, daemon_cpu / gib


def into_terminal(command: str, size: int, daemon_pid: int | None) -> tuple[float, float]:
    """(MB/s, daemon CPU s/GB) of `command` run in script's pty, script's output to /dev/null."""
    before = _cpu_seconds(daemon_pid) if daemon_pid else 0.0
    start = time.perf_counter()
    subprocess.run(["script", "-qfec", command, "/dev/null"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   check=True)
    elapsed = time.perf_counter() - start
    cpu = (_cpu_seconds(daemon_pid) - before) if daemon_pid else 0.0
    return size / elapsed / 1e6, cpu / (size / 1e9)


def rotate(items: list, round_number: int) -> list:
    shift = round_number % len(items)
    return items[shift:] + items[:shift]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40, help="runs of each start-up figure (default 40)")
    parser.add_argument("--transfers", type=int, default=3, help="runs of each 1 GiB transfer (default 3)")
    parser.add_argument("--pty-mib", type=int, default=256, help="MiB through the pty per run (default 256)")
    parser.add_argument("--pty-runs", type=int, default=3, help="runs of each pty figure (default 3)")
    parser.add_argument("--other-capsudo", help="another implementation's client")
    parser.add_argument("--other-capsudod", help="another implementation's daemon")
    parser.add_argument("--other-name", default="other", help="its name in the table (default: other)")
    parser.add_argument("--only", default="startup,unix,tcp,pty", help="comma-separated, of startup,unix,tcp,pty")
    options = parser.parse_args()
    if bool(options.other_capsudo) != bool(options.other_capsudod):
        parser.error("--other-capsudo and --other-capsudod go together")
    parts = set(options.only.split(","))
    ensure_bytecode()
    print(f"== side by side, {machine()}")
    print(f"   {time.strftime('%Y-%m-%d %H:%M:%S')}; {' '.join(sys.argv)}")
    print()
    directory = tempfile.mkdtemp(prefix="capsudo-side-")
    implementations = [Implementation("ours", CAPSUDO, CAPSUDOD, directory)]
    try:
        if options.other_capsudo:
            implementations.append(Implementation(options.other_name, options.other_capsudo, options.other_capsudod, directory))
        rows: list[list[str]] = []
        if "startup" in parts:
            subjects = {"python -c pass": [PYTHON, "-c", "pass"]}
            for each in implementations:
                subjects[f"{each.name}: -S /unix/socket -- true"] = [each.client, "-S", each.socket, "--", "true"]
                subjects[f"{each.name}: -S tcp://… -- true"] = [each.client, "-S", each.tcp, "--", "true"]
                subjects[f"{each.name}: -S tcp://… -- no-such-program"] = [each.client, "-S", each.tcp, "--", "no-such-program"]
            times: dict[str, list[float]] = {name: [] for name in subjects}
            for round_number in range(options.rounds + 3):
                for name in rotate(list(subjects), round_number):
                    elapsed = timed(subjects[name], expect_failure="no-such-program" in name)
                    if round_number >= 3:  # the first rounds warm the caches
                        times[name].append(elapsed)
            base = median(times["python -c pass"])
            for name, values in times.items():
                rows.append([name, f"{median(values) * 1000:.1f} ms", f"{median(values) / base:.2f}x python -c pass", ""])
        gib_runs: list[tuple[str, callable]] = []
        if "unix" in parts:
            gib_runs.append(("head alone into the pipe", lambda: transfer(HEAD, None)))
            for each in implementations:
                gib_runs.append((f"{each.name}: 1 GiB, Unix socket",
                                 lambda each=each: transfer([each.client, "-S", each.socket, "--", *HEAD], each.unix_daemon.pid)))
        if "tcp" in parts:
            if SOCAT:
                def through_socat():
                    port = str(free_port())
                    sender = ["sh", "-c", f'{" ".join(HEAD)} | exec socat -u STDIN TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr']
                    receiver = [SOCAT, "-u", f"TCP:127.0.0.1:{port},retry=500,interval=0.01", "STDOUT"]
                    return transfer(sender, None, receiver)

                gib_runs.append(("socat, loopback TCP", through_socat))
            for each in implementations:
                gib_runs.append((f"{each.name}: 1 GiB, tcp://",
                                 lambda each=each: transfer([each.client, "-S", each.tcp, "--", *HEAD], each.tcp_daemon.pid)))
        if gib_runs:
            figures: dict[str, list[tuple[float, float, float]]] = {name: [] for name, _ in gib_runs}
            for round_number in range(options.transfers):
                for name, run in rotate(gib_runs, round_number):
                    figures[name].append(run())
            for name, values in figures.items():
                rate = median([v[0] for v in values])
                rows.append([name, f"{rate:.0f} MB/s", f"client {median([v[1] for v in values]):.2f} s/GiB",
                             f"daemon {median([v[2] for v in values]):.2f} s/GiB"])
        if "pty" in parts:
            size = options.pty_mib * 1024 * 1024
            command = f"head -c {size} /dev/zero"
            pty_runs = [("script alone", lambda: into_terminal(command, size, None))]
            for each in implementations:
                pty_runs.append((f"{each.name}: -i in script",
                                 lambda each=each: into_terminal(f"{each.client} -S {each.socket} -i -- {command}", size,
                                                                 each.unix_daemon.pid)))
            pty_figures: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in pty_runs}
            for round_number in range(options.pty_runs):
                for name, run in rotate(pty_runs, round_number):
                    pty_figures[name].append(run())
            alone = median([v[0] for v in pty_figures["script alone"]])
            for name, values in pty_figures.items():
                rate = median([v[0] for v in values])
                rows.append([f"pty {options.pty_mib} MiB: {name}", f"{rate:.0f} MB/s", f"{rate / alone:.2f}x script alone",
                             f"daemon {median([v[1] for v in values]):.2f} s/GB"])
        print(table(["figure", "median", "beside", "CPU"], rows))
    finally:
        for each in implementations:
            each.stop()
        shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
