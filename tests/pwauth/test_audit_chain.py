"""One session through capsudod-pwauth and its chained capsudod: one id in both, and no password in any sink."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.integration.audit_listeners import drain, stand_ins

from .conftest import CAPSUDOD

pytestmark = [pytest.mark.root, pytest.mark.pam, pytest.mark.terminal]


def test_a_password_session_is_one_story_and_no_sink_holds_the_password(front_end, users, run_client, endpoint_dir):
    audit = Path(endpoint_dir, "audit.jsonl")
    syslog, journal, env = stand_ins(endpoint_dir)
    # The chained command's environment is ours to give: the sockets standing in for syslog and the journal.
    chained = ["/usr/bin/env", *(f"{name}={value}" for name, value in env.items()),
               CAPSUDOD, "--audit", str(audit), "--audit", "syslog", "--audit", "journal"]
    front = front_end(command=chained)
    run = run_client(users.alice, front.socket, "-n", "--", "echo", "audited", passwords=[users.alice.password])
    assert run.status == 0, run.transcript
    front.wait_for_log(r"capsudod: session ")

    records = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [record["event"] for record in records] == ["accepted", "requested", "decided", "started", "ended"]
    (session,) = {record["session"] for record in records}
    accepted = re.search(r"session=([0-9a-f]{16}) user=\S+ uid=\d+ pid=\d+ outcome=accepted", front.log())
    assert accepted.group(1) == session
    assert records[0]["peer"]["user"] == users.alice.name

    outputs = [audit.read_bytes(), front.log().encode(), *drain(syslog), *drain(journal)]
    assert len(outputs) == 2 + 5 + 5
    assert all(session.encode() in output for output in outputs[2:])
    assert not [output for output in outputs if users.alice.password.encode() in output]
