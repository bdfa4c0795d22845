"""The agent sandbox of examples/agent-sandbox: what the agent can do through its one endpoint, and what it cannot."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.root
EXAMPLE = Path(__file__).parents[2] / "examples" / "agent-sandbox" / "sandbox.py"


@pytest.fixture(scope="module")
def report():
    for tool in ("bwrap", "setpriv", "useradd"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (apt-get install bubblewrap util-linux passwd)")
    spec = importlib.util.spec_from_file_location("agent_sandbox", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.run_sandbox()


def test_the_agent_restarts_the_service_through_its_one_capability(report):
    assert report["held"] == ["restart-web"]
    assert report["restart"] == {"is_error": False, "exit_status": 0, "stdout": "web restarted\n"}
    assert report["host: service restarts"] == 1


def test_the_agent_runs_as_its_own_user_without_privilege(report):
    assert report["uid"] != 0 and report["groups"] == []
    assert report["effective capabilities"] == "0000000000000000"


def test_the_agent_reaches_nothing_else(report):
    assert report["unheld_through_server"] == "unknown-capability"
    assert report["read /etc/shadow"].startswith("refused")
    assert report["ssh keys"].startswith("refused") and report["list /root"] in ([], [".pyenv"])
    assert report["write /etc/agent"].startswith("refused") and report["write /usr/agent"].startswith("refused")
    assert report["reach another socket"].startswith("refused")
    assert report["write own dir"] == "done" and report["host: files the agent left"] == ["notes"]
