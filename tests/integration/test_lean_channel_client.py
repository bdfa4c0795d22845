"""The command line over tcp:// and tls:// takes the path without trio and construct, and a refusal ends at once."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from .daemon_process import CAPSUDO, capsudo
from .test_channel_sessions import _client_tls, _tls_daemon, certificates  # noqa: F401  (a fixture)


def _imported(argv: list[str]) -> set[str]:
    result = subprocess.run([sys.executable, "-X", "importtime", CAPSUDO, *argv],
                            capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    return {line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}


def _heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in ("trio", "construct"))


def test_tcp_imports_neither_trio_nor_construct_nor_ssl(network_daemon_factory):
    daemon = network_daemon_factory("tcp://127.0.0.1:0")
    modules = _imported(["-S", daemon.socket, "--", "true"])
    assert "capsudo.core._lean_channel_client" in modules
    assert _heavy(modules) == []
    assert "ssl" not in modules


def test_tls_imports_neither_trio_nor_construct(network_daemon_factory, certificates):  # noqa: F811
    daemon = _tls_daemon(network_daemon_factory, certificates)
    modules = _imported(["-S", daemon.socket, *_client_tls(certificates), "--", "true"])
    assert "capsudo.core._lean_channel_client" in modules
    assert _heavy(modules) == []


def test_a_refused_tcp_session_ends_at_once(network_daemon_factory):
    daemon = network_daemon_factory("tcp://127.0.0.1:0")
    start = time.monotonic()
    result = capsudo(daemon.socket, "--", "no-such-program-here")
    elapsed = time.monotonic() - start
    assert result.returncode == 127
    assert b"unable to run no-such-program-here" in result.stderr
    assert elapsed < 1.0, f"a refusal took {elapsed:.2f}s"
