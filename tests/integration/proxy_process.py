"""Running capsudo-proxy for integration tests, and reading where it listens."""

from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .daemon_process import BIN

CAPSUDO_PROXY = str(BIN / "capsudo-proxy")

_FORWARDING = re.compile(r"forwarding (\S+) to ")


@dataclass
class Proxy:
    listen: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def session_lines(self) -> list[str]:
        return [line for line in self.log().splitlines() if line.startswith("capsudo-proxy: session ")]

    def stop(self, timeout: float = 10.0) -> int:
        if self.process.poll() is None:
            self.process.terminate()
        return self.process.wait(timeout)


def start_proxy(listen: str, target: str, *options: str, log_path: Path, prefix: tuple[str, ...] = (),
                env=None, timeout: float = 20.0) -> Proxy:
    """Start `capsudo-proxy -S listen target` and wait until it is listening.

    The address returned is the one the proxy reports, so tcp://HOST:0 comes
    back with its real port. `prefix` runs it under another command
    (`ip netns exec NAME`).
    """
    log = open(log_path, "wb")
    process = subprocess.Popen([*prefix, CAPSUDO_PROXY, *options, "-S", listen, target],
                               stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
    log.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = _FORWARDING.search(log_path.read_text(errors="replace"))
        if match and (match.group(1).startswith(("tcp://", "tls://")) or os.path.exists(match.group(1))):
            return Proxy(match.group(1), process, log_path)
        if process.poll() is not None:
            break
        time.sleep(0.02)
    if process.poll() is None:
        process.kill()
        process.wait()
    raise AssertionError(f"capsudo-proxy did not start listening: {log_path.read_text(errors='replace')}")
