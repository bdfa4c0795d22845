"""A stop signal that comes while a server starts is a clean stop.

Each listening command is sent SIGTERM the moment its socket appears, before
its serve loop has begun: it must still remove the socket and exit 0, as it
does when stopped later, rather than die of the signal's default action and
leave the socket behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

BIN = os.path.dirname(sys.executable)
STARTS = 8


def _commands(path: str) -> dict[str, list[str]]:
    return {
        "capsudod": [f"{BIN}/capsudod", "-S", path, "-f", "-E", "true"],
        "capsudo-proxy": [f"{BIN}/capsudo-proxy", "-S", path, path + ".target"],
        "capsudod-pwauth": [f"{BIN}/capsudod-pwauth", "-S", path, "--service", "other", "--", f"{BIN}/capsudod", "-f", "-E", "true"],
    }


@pytest.mark.parametrize("command", ["capsudod", "capsudo-proxy", "capsudod-pwauth"])
def test_sigterm_as_the_socket_appears_is_a_clean_stop(sock_dir, command):
    path = os.path.join(sock_dir, "starting.sock")
    for _ in range(STARTS):
        process = subprocess.Popen(_commands(path)[command], stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 15
        while not os.path.exists(path) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.0005)
        if process.poll() is not None:
            stderr = process.stderr.read().decode()
            if "cannot load PAM" in stderr:
                pytest.skip("no PAM for capsudod-pwauth")
            pytest.fail(f"{command} did not start: {stderr}")
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(timeout=15)
        stderr = process.stderr.read().decode()
        assert returncode == 0, f"{command} ended with {returncode}: {stderr}"
        assert not os.path.lexists(path), stderr
