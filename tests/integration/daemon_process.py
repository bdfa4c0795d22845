"""Running the real commands for integration tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

BIN = Path(sys.executable).parent
CAPSUDO = str(BIN / "capsudo")
CAPSUDOD = str(BIN / "capsudod")


def wait_for_path(path: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {timeout}s")
        time.sleep(0.01)


@dataclass
class Daemon:
    socket: str
    process: subprocess.Popen
    log_path: Path
    args: list[str] = field(default_factory=list)

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signum)
        return self.process.wait(timeout)


def kill_left_running(started) -> None:
    """At a fixture's end: SIGKILL and reap whatever it started that still runs."""
    for started_process in started:
        if started_process.process.poll() is None:
            started_process.process.kill()
            started_process.process.wait()


def start_daemon(socket_path: str, *args: str, log_dir: str | None = None, env=None) -> Daemon:
    log_path = Path(log_dir or os.path.dirname(socket_path)) / (os.path.basename(socket_path) + ".log")
    log = open(log_path, "wb")
    process = subprocess.Popen(
        [CAPSUDOD, "-S", socket_path, *args],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        env=env,
    )
    log.close()
    try:
        wait_for_path(socket_path)
    except TimeoutError:
        process.kill()
        raise AssertionError(f"capsudod did not start: {log_path.read_text()}")
    return Daemon(socket_path, process, log_path, list(args))


def start_network_daemon(endpoint: str, *args: str, log_path: Path, env=None, timeout: float = 15.0) -> Daemon:
    """A capsudod on a tcp://, tls:// or vsock:// endpoint (port 0: any free one).

    Its `socket` is the address it logged as bound, ready for `capsudo -S`.
    """
    log = open(log_path, "wb")
    process = subprocess.Popen([CAPSUDOD, "-S", endpoint, *args], stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
    log.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log_path.read_text().splitlines():
            if line.startswith("capsudod: listening on "):
                return Daemon(line.removeprefix("capsudod: listening on "), process, log_path, list(args))
        if process.poll() is not None:
            break
        time.sleep(0.02)
    process.kill()
    process.wait()
    raise AssertionError(f"capsudod did not start on {endpoint}: {log_path.read_text()}")


def capsudo(socket_path: str, *argv: str, input: bytes | None = None, timeout: float = 20, env=None, **kwargs):
    return subprocess.run(
        [CAPSUDO, "-S", socket_path, *argv],
        input=input,
        capture_output=True,
        timeout=timeout,
        env=env,
        **kwargs,
    )
