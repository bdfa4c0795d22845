"""One session, one id, through a chain: capsudo-proxy in front of capsudod, read as the audit grows."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

from .audit_listeners import Tail
from .daemon_process import CAPSUDO, kill_left_running
from .proxy_process import start_proxy


def test_a_session_through_the_proxy_is_one_story_read_as_it_happens(daemon_factory, sock_dir):
    audit, mark = Path(sock_dir, "audit.jsonl"), Path(sock_dir, "go-on")
    daemon = daemon_factory("--audit", str(audit), "--", "sh", "-c", f"until [ -e {mark} ]; do sleep 0.02; done")
    proxy = start_proxy(f"{sock_dir}/near.sock", f"unix://{daemon.socket}", log_path=Path(sock_dir, "proxy.log"))
    tail = Tail(str(audit))
    client = subprocess.Popen([CAPSUDO, "-S", proxy.listen], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        started = tail.next_event("started")
        assert client.poll() is None  # read while the program still runs, not after the fact
        mark.touch()
        ended = tail.next_event("ended")
        assert client.wait(10) == 0 and ended["status"] == 0
    finally:
        tail.stop()
        kill_left_running([proxy])
        client.kill()
    deadline = time.monotonic() + 5
    while not proxy.session_lines() and time.monotonic() < deadline:
        time.sleep(0.02)
    proxy_id = re.search(r" id=([0-9a-f]{16})$", proxy.session_lines()[0]).group(1)
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [record["event"] for record in records] == ["accepted", "requested", "decided", "started", "ended"]
    assert {record["session"] for record in records} == {proxy_id} == {started["session"]}


def test_a_client_cannot_choose_its_session_id_by_its_address(daemon_factory, sock_dir, scratch_user):
    """An unprivileged peer bound to a session address is given an id of the daemon's own."""
    name, uid, gid = scratch_user
    os.chmod(sock_dir, 0o755)
    audit = Path(sock_dir, "audit.jsonl")
    daemon = daemon_factory("--audit", str(audit), "-m", "0666", "--", "true")
    chosen = "00000000deadbeef"
    code = ("import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(b'\\0capsudo-session/" + chosen + "');"
            "s.connect(sys.argv[1]); s.close()")
    subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
                    "/usr/bin/python3", "-c", code, daemon.socket], check=True, timeout=10)
    deadline = time.monotonic() + 5
    while not audit.exists() or '"ended"' not in audit.read_text():
        assert time.monotonic() < deadline, "the session never ended in the audit"
        time.sleep(0.02)
    sessions = {json.loads(line)["session"] for line in audit.read_text().splitlines()}
    assert len(sessions) == 1 and chosen not in sessions


def test_what_a_pinned_endpoint_drops_is_audited_and_refuse_dropped_refuses_it(daemon_factory, sock_dir):
    audit = Path(sock_dir, "audit.jsonl")
    lenient = daemon_factory("-f", "-E", "--audit", str(audit), "--", "echo", "pinned", name="lenient.sock")
    ran = subprocess.run([CAPSUDO, "-S", lenient.socket, "-e", "TOKEN=x", "--", "reboot"], capture_output=True,
                         text=True, env={**os.environ, "LANG": "C"}, timeout=20)
    assert (ran.returncode, ran.stdout) == (0, "pinned\n")
    assert ran.stderr == ("capsudo: note: this endpoint ignores arguments ('reboot') and environment entries (TOKEN): "
                          "ran echo pinned\n")
    strict = daemon_factory("-f", "-E", "--refuse-dropped", "--", "echo", "pinned", name="strict.sock")
    refused = subprocess.run([CAPSUDO, "-S", strict.socket, "-e", "TOKEN=x", "--", "reboot"], capture_output=True,
                             text=True, timeout=20)
    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr == ("capsudo: error: this endpoint ignores arguments ('reboot') and environment entries "
                              "(TOKEN), and refuses a request that has them\n")
    # LANG, which every client sends unasked, is dropped without a word: no refusal for it.
    plain = subprocess.run([CAPSUDO, "-S", strict.socket], capture_output=True, text=True, timeout=20,
                           env={**os.environ, "LANG": "C"})
    assert (plain.returncode, plain.stdout) == (0, "pinned\n")
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    requested, decided = (next(r for r in records if r["event"] == name) for name in ("requested", "decided"))
    assert requested["argv"] == ["reboot"] and "TOKEN" in requested["env_names"]
    assert decided["dropped"] == {"argv": ["reboot"], "env_names": ["TOKEN"]} and decided["argv"] == ["echo", "pinned"]
