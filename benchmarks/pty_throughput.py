"""Output through an interactive session's pty, beside plain ptys.

Subject: `capsudo -S ENDPOINT -i -- sh -c 'COMMAND'`, where the program
writes into the pty the daemon allocated and the daemon relays the master to
the client's stdout. Two baselines, in the same run and interleaved with it:

- script: `script -qfec 'COMMAND' /dev/null`, util-linux's script relaying a
  pty of its own, in C, to the same stdout;
- bare pty: a pty this script opens itself, COMMAND's stdout on the slave and
  this script reading the master with blocking 64 KiB reads, discarding what
  it reads: the kernel's pty alone, with the cheapest possible reader. No
  relay can beat it.

COMMAND is `head -c SIZE /dev/zero`, run twice over:

- cooked: the terminal as a program finds it (OPOST, ONLCR). The kernel's
  output processing, in the writer's own write(2) calls, costs more than
  everything else on the path, so every relay meets the same ceiling;
- raw: `stty raw -echo` first, as a full-screen program does; what is left
  to measure is the relay.

capsudo's and script's output goes to /dev/null, or with --pipe into a pipe
this script drains and counts (the count is checked; the bare pty's reader
counts too). MB are 10^6 bytes.

Besides the rates, which move with whatever else runs on the machine, each
subject's relay CPU time per GB: the daemon's and the client's own time for
capsudo, script's own time, the reading thread's for the bare pty (never the
program's, nor the kernel's work done in the program's write calls).

Target: capsudo's median at least 150 MB/s in both modes and at least 0.9x
script's median in the same mode.

With --terminal, the client's output goes to a real terminal instead, read
at a terminal's pace: `script -qfec "capsudo -S ENDPOINT -i -- COMMAND"
/dev/null`, where the outer script's pty is the client's terminal and the
daemon writes into it, pushed back whenever script has not read yet. Its
baseline, interleaved with it, is `script -qfec "COMMAND" /dev/null` alone.
Beside the rates, the daemon's CPU seconds per GB (from /proc/PID/stat) and
the outer script's. Target: at least 0.7x script alone (issue 18).

    .venv/bin/python benchmarks/pty_throughput.py [--repeat N] [--size MiB] [--pipe] [--terminal]
"""

from __future__ import annotations

import argparse
import os
import pty
import shutil
import subprocess
import sys
import threading
import time

from _harness import CAPSUDO, Daemon, Verdict, median, table

TARGET_MB_S = 150.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
TARGET_RATIO = 0.9
TERMINAL_TARGET_RATIO = 0.7

MODES = {
    "cooked": "head -c {size} /dev/zero",
    "raw": "stty raw -echo; head -c {size} /dev/zero",
}


def _drain(stream, counted: list[int]) -> None:
    total = 0
    while chunk := stream.read(1 << 20):
        total += len(chunk)
    counted.append(total)


def _cpu_seconds(pid: int) -> float:
    """utime + stime of pid itself (not its children), from /proc."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _wait_with_cpu(process: subprocess.Popen) -> tuple[int, float]:
    """Its status and its own CPU time: read while it is a zombie, before reaping."""
    os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOWAIT)
    cpu = _cpu_seconds(process.pid)
    return process.wait(), cpu


def run_once(argv: list[str], size: int, pipe: bool, helper: int | None = None) -> tuple[float, float]:
    """(seconds from start to end, CPU seconds of the relay) for one run; checks
    status and byte count. The relay is the process run here, plus `helper`
    (the daemon) when given: neither counts the program's own time."""
    helper_before = _cpu_seconds(helper) if helper else 0.0
    start = time.perf_counter()
    if pipe:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        counted: list[int] = []
        drainer = threading.Thread(target=_drain, args=(process.stdout, counted))
        drainer.start()
        status, cpu = _wait_with_cpu(process)
        drainer.join()
        process.stdout.close()
        elapsed = time.perf_counter() - start
        if counted[0] != size:
            raise RuntimeError(f"{argv}: {counted[0]} bytes arrived, {size} expected")
    else:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        status, cpu = _wait_with_cpu(process)
        elapsed = time.perf_counter() - start
    if helper:
        cpu += _cpu_seconds(helper) - helper_before
    if status != 0:
        raise RuntimeError(f"{argv} exited with status {status}")
    return elapsed, cpu


def run_bare_pty(command: str, size: int) -> tuple[float, float]:
    """(seconds, CPU seconds of the reading thread) for `sh -c command` on a
    pty of our own, read here to its end."""
    master, slave = pty.openpty()
    start = time.perf_counter()
    process = subprocess.Popen(
        ["sh", "-c", command], stdin=slave, stdout=slave, stderr=slave, start_new_session=True
    )
    os.close(slave)
    cpu_start = time.thread_time()
    total = 0
    while True:
        try:
            chunk = os.read(master, 1 << 16)
        except OSError:  # EIO: the last holder of the slave closed it
            break
        if not chunk:
            break
        total += len(chunk)
    cpu = time.thread_time() - cpu_start
    status = process.wait()
    elapsed = time.perf_counter() - start
    os.close(master)
    if status != 0:
        raise RuntimeError(f"{command} on a bare pty exited with status {status}")
    if total != size:
        raise RuntimeError(f"{command} on a bare pty: {total} bytes arrived, {size} expected")
    return elapsed, cpu


def run_in_terminal(command: str, size: int, pipe: bool, daemon_pid: int | None) -> tuple[float, float, float]:
    """(seconds, CPU seconds of the outer script, of the daemon) for `command`
    run in a terminal of script's; the daemon's is 0 without `daemon_pid`."""
    before = _cpu_seconds(daemon_pid) if daemon_pid else 0.0
    elapsed, script_cpu = run_once(["script", "-qfec", command, "/dev/null"], size, pipe)
    after = _cpu_seconds(daemon_pid) if daemon_pid else 0.0
    return elapsed, script_cpu, after - before


def terminal_main(options: argparse.Namespace, size: int) -> int:
    verdict = Verdict(f"interactive output into a real terminal (script's pty), {options.size} MiB per run")
    print(f"   script's output into {'a pipe this script drains' if options.pipe else '/dev/null'}, "
          f"{options.repeat} runs each")
    print()
    rows = []
    gigabytes = size / 1e9
    with Daemon() as daemon:
        for mode, template in MODES.items():
            command = template.format(size=size)
            through = f"{CAPSUDO} -S {daemon.socket} -i -- sh -c '{command}'"
            subjects = {
                "capsudo -i in script": lambda: run_in_terminal(through, size, options.pipe, daemon.pid),
                "script alone": lambda: run_in_terminal(command, size, options.pipe, None),
            }
            rates: dict[str, list[float]] = {name: [] for name in subjects}
            script_costs: dict[str, list[float]] = {name: [] for name in subjects}
            daemon_costs: dict[str, list[float]] = {name: [] for name in subjects}
            for repetition in range(options.repeat):
                names = list(subjects)
                shift = repetition % len(names)
                for name in names[shift:] + names[:shift]:
                    elapsed, script_cpu, daemon_cpu = subjects[name]()
                    rates[name].append(size / elapsed / 1e6)
                    script_costs[name].append(script_cpu / gigabytes)
                    daemon_costs[name].append(daemon_cpu / gigabytes)
            for name, values in rates.items():
                rows.append(
                    [f"{mode}: {name}", f"{median(values):.0f}", f"{max(values):.0f}", f"{min(values):.0f}",
                     f"{median(daemon_costs[name]):.2f}", f"{median(script_costs[name]):.2f}",
                     " ".join(f"{value:.0f}" for value in values)]
                )
            ours, theirs = median(rates["capsudo -i in script"]), median(rates["script alone"])
            verdict.check(
                f"{mode}: capsudo -i >= {TERMINAL_TARGET_RATIO}x script alone",
                f"{ours / theirs:.2f}x ({ours:.0f} / {theirs:.0f} MB/s)", ours >= TERMINAL_TARGET_RATIO * theirs,
            )
    print(table(["MB/s", "median", "best", "worst", "daemon CPU s/GB", "script CPU s/GB", "runs"], rows))
    return verdict.finish()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs of each command in each mode (default 5)")
    parser.add_argument("--size", type=int, default=512, help="MiB written by each run (default 512)")
    parser.add_argument("--pipe", action="store_true", help="output into a drained pipe instead of /dev/null")
    parser.add_argument("--terminal", action="store_true", help="the client's output into script's pty, beside script alone")
    options = parser.parse_args()
    if shutil.which("script") is None:
        print("util-linux's script is not installed: no baseline to compare with", file=sys.stderr)
        return 2
    size = options.size * 1024 * 1024
    if options.terminal:
        return terminal_main(options, size)
    verdict = Verdict(f"interactive output through the pty, {options.size} MiB per run")
    print(f"   output into {'a pipe this script drains' if options.pipe else '/dev/null'}, {options.repeat} runs each")
    print()
    rows = []
    with Daemon() as daemon:
        for mode, template in MODES.items():
            command = template.format(size=size)
            subjects = {
                "capsudo -i": lambda: run_once(
                    [CAPSUDO, "-S", daemon.socket, "-i", "--", "sh", "-c", command], size, options.pipe,
                    helper=daemon.pid,
                ),
                "script": lambda: run_once(["script", "-qfec", command, "/dev/null"], size, options.pipe),
                "bare pty": lambda: run_bare_pty(command, size),
            }
            rates: dict[str, list[float]] = {name: [] for name in subjects}
            costs: dict[str, list[float]] = {name: [] for name in subjects}
            for repetition in range(options.repeat):
                # Rotate which goes first, so none always meets a warm cache.
                names = list(subjects)
                shift = repetition % len(names)
                for name in names[shift:] + names[:shift]:
                    elapsed, cpu = subjects[name]()
                    rates[name].append(size / elapsed / 1e6)
                    costs[name].append(cpu / (size / 1e9))
            for name, values in rates.items():
                rows.append(
                    [f"{mode}: {name}", f"{median(values):.0f}", f"{max(values):.0f}", f"{min(values):.0f}",
                     f"{median(costs[name]):.2f}", " ".join(f"{value:.0f}" for value in values)]
                )
            ours, theirs = median(rates["capsudo -i"]), median(rates["script"])
            verdict.check(f"{mode}: capsudo -i >= {TARGET_MB_S:.0f} MB/s", f"{ours:.0f} MB/s", ours >= TARGET_MB_S)
            verdict.check(
                f"{mode}: capsudo -i >= {TARGET_RATIO}x script", f"{ours / theirs:.2f}x ({theirs:.0f} MB/s)",
                ours >= TARGET_RATIO * theirs,
            )
    print(table(["MB/s", "median", "best", "worst", "relay CPU s/GB", "runs"], rows))
    return verdict.finish()


if __name__ == "__main__":
    sys.exit(main())
