"""What every benchmark shares: a private capsudod, timing figures, the verdict.

Each benchmark starts its own daemon on a socket in a fresh temporary
directory, measures the subject and its baseline in the same run (the runs
interleaved, so that a burst of load on this small machine hits both), prints
a table and exits 1 when a target is missed.
"""

from __future__ import annotations

import compileall
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The commands installed beside the interpreter running the benchmark
# (.venv/bin/python benchmarks/...: the workspace's .venv).
BIN = Path(sys.executable).parent
PYTHON = sys.executable
CAPSUDO = str(BIN / "capsudo")
CAPSUDOD = str(BIN / "capsudod")
TRUE = shutil.which("true") or "/bin/true"


def ensure_bytecode() -> None:
    """Compile the workspace's sources, as installing a wheel does.

    With PYTHONDONTWRITEBYTECODE set (as on some CI machines) an editable
    install would otherwise recompile every module on every start, and the
    start-up figures would measure the compiler instead of capsudo.
    """
    import capsudo  # a namespace package: one portion per workspace package

    for portion in list(capsudo.__path__):
        compileall.compile_dir(portion, quiet=2)


def machine() -> str:
    model = "?"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs, {model}, Linux {platform.release()}, Python {platform.python_version()}"


def wait_until_connectable(path: str, process: subprocess.Popen, timeout: float = 10.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"capsudod exited with status {process.returncode} before listening")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"capsudod did not listen on {path} within {timeout}s") from None
            time.sleep(0.01)
        finally:
            probe.close()


class Daemon:
    """`capsudod -S <private socket> [args...]`, stopped with SIGTERM on exit.

    Its log (one line per session) goes to a file, as a deployed daemon's
    would go to the journal.
    """

    def __init__(self, *args: str) -> None:
        self.args = args
        self.directory = tempfile.mkdtemp(prefix="capsudo-bench-")
        self.socket = os.path.join(self.directory, "endpoint")
        self.log_path = os.path.join(self.directory, "capsudod.log")

    def __enter__(self) -> "Daemon":
        ensure_bytecode()
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [CAPSUDOD, "-S", self.socket, *self.args], stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        try:
            wait_until_connectable(self.socket, self.process)
        except BaseException:
            self.process.kill()
            self.process.wait()
            sys.stderr.write(open(self.log_path).read())
            raise
        # The probe above was a session too; let its log line settle.
        time.sleep(0.05)
        return self

    @property
    def pid(self) -> int:
        return self.process.pid

    def __exit__(self, *exc_info) -> None:
        stop_process(self.process)
        shutil.rmtree(self.directory, ignore_errors=True)


def stop_process(process: subprocess.Popen) -> None:
    """SIGTERM, as a service is stopped; SIGKILL if it is not gone within 10 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def spawn_and_wait(argv: list[str], **kwargs) -> float:
    """Seconds from spawning argv to reaping it; raises if it failed."""
    start = time.perf_counter()
    process = subprocess.Popen(argv, **kwargs)
    status = process.wait()
    elapsed = time.perf_counter() - start
    if status != 0:
        raise RuntimeError(f"{argv} exited with status {status}")
    return elapsed


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def median(values: list[float]) -> float:
    return statistics.median(values)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]

    def line(cells) -> str:
        return "  ".join(
            str(cell).ljust(width) if i == 0 else str(cell).rjust(width) for i, (cell, width) in enumerate(zip(cells, widths))
        )

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(header), rule, *(line(row) for row in rows)])


class Verdict:
    """Targets and whether they were met; `finish()` prints them and exits."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.results: list[tuple[str, str, bool]] = []
        print(f"== {title}")
        print(f"   {machine()}")
        print(f"   {time.strftime('%Y-%m-%d %H:%M:%S')}")
        print()

    def check(self, target: str, measured: str, met: bool) -> None:
        self.results.append((target, measured, met))

    def finish(self) -> int:
        print()
        print(table(["target", "measured", "verdict"], [[t, m, "met" if ok else "MISSED"] for t, m, ok in self.results]))
        missed = [t for t, _, ok in self.results if not ok]
        print()
        print(f"{self.title}: " + ("all targets met" if not missed else f"{len(missed)} target(s) missed"))
        return 1 if missed else 0
