"""The audit's syslog and journal sinks, each read by a test-owned datagram socket standing in for the log daemon.

The daemon is told the stand-in's path by CAPSUDO_SYSLOG_SOCKET and
CAPSUDO_JOURNAL_SOCKET; what it sends must be what syslogd and journald
parse: a `<PRI>` line with the JSON as its message, and the journal's
native `NAME=value` fields.
"""

from __future__ import annotations

import os
import subprocess

from .audit_listeners import datagram_listener, journal_fields, read_until_ended, syslog_message
from .daemon_process import CAPSUDOD, capsudo


def test_syslog_and_journal_get_every_event_of_a_session(daemon_factory, sock_dir):
    syslog = datagram_listener(f"{sock_dir}/log")
    journal = datagram_listener(f"{sock_dir}/journal")
    env = {**os.environ, "CAPSUDO_SYSLOG_SOCKET": f"{sock_dir}/log", "CAPSUDO_JOURNAL_SOCKET": f"{sock_dir}/journal"}
    daemon = daemon_factory("--audit", "syslog", "--audit", "journal", "--", "echo", env=env)
    assert capsudo(daemon.socket, "hello").returncode == 0

    from_syslog = read_until_ended(syslog, syslog_message)
    assert [record["event"] for record in from_syslog] == ["accepted", "requested", "decided", "started", "ended"]
    assert from_syslog[1]["argv"] == ["hello"]

    datagrams = []
    from_journal = read_until_ended(journal, lambda data: datagrams.append(journal_fields(data)) or datagrams[-1]["MESSAGE"])
    assert from_journal == from_syslog
    session = from_syslog[0]["session"]
    for fields, record in zip(datagrams, from_journal):
        assert fields["CAPSUDO_SESSION"] == session and fields["CAPSUDO_EVENT"] == record["event"]
        assert fields["SYSLOG_IDENTIFIER"] == "capsudod" and fields["PRIORITY"] == "6"


def test_a_daemon_whose_log_daemon_is_absent_says_so_in_one_line_and_does_not_start(sock_dir):
    env = {**os.environ, "CAPSUDO_JOURNAL_SOCKET": f"{sock_dir}/nobody-listens"}
    result = subprocess.run([CAPSUDOD, "-S", f"{sock_dir}/cap.sock", "--audit", "journal", "--", "true"],
                            capture_output=True, text=True, env=env, timeout=10)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"capsudod: cannot open the audit sink {sock_dir}/nobody-listens: No such file or directory"]
