"""The decision seam and the session events, installed from code.

A daemon served from this test, on a real Unix listener, with a decision of
the test's own (it refuses any request that asks for `reboot`, and lets the
endpoint's attenuation decide the rest) and an event sink that keeps what it
is given. The real `capsudo` command is the client.
"""

from __future__ import annotations

import os
import subprocess
import sys

import trio

from capsudo.core import (Accepted, Asked, Decided, Ended, Policy, Refuse, Requested, Started, attenuating,
                          serve_session)
from capsudo.proto import Reason
from capsudo.transport import open_unix_listener

CAPSUDO = [sys.executable, "-m", "capsudo.client"]


async def refuse_reboot(asked: Asked):
    if "reboot" in asked.request.argv:
        return Refuse(Reason("not-today", "rebooting is not allowed from here"))
    return await attenuating(asked)


async def _serve_and_run(path: str, *argv: str):
    """Serve sessions on `path` while the capsudo command runs argv through it."""
    events = []
    listener = await open_unix_listener(path)
    async with trio.open_nursery() as nursery:

        async def accept_loop():
            while True:
                channel = await listener.accept()
                nursery.start_soon(lambda c=channel: serve_session(c, Policy(), decide=refuse_reboot,
                                                                   events=events.append))

        nursery.start_soon(accept_loop)
        result = await trio.run_process([*CAPSUDO, "-S", path, "--", *argv], capture_stdout=True,
                                        capture_stderr=True, check=False, stdin=subprocess.DEVNULL)
        # The session's last event follows the client's exit by a moment.
        with trio.fail_after(5):
            while not events or not isinstance(events[-1], Ended):
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    await listener.aclose()
    return result, events


def test_the_hook_refuses_with_a_reason_the_client_prints_in_one_line(sock_dir):
    result, events = trio.run(_serve_and_run, os.path.join(sock_dir, "d.sock"), "reboot", "now")
    assert result.returncode == 1
    assert result.stderr.decode() == "capsudo: error: rebooting is not allowed from here\n"
    assert [type(e) for e in events] == [Accepted, Requested, Decided, Ended]
    decided = events[2]
    assert (decided.allowed, decided.reason) == (False, Reason("not-today", "rebooting is not allowed from here"))


def test_the_sink_receives_the_five_events_of_a_session_with_one_id(sock_dir):
    result, events = trio.run(_serve_and_run, os.path.join(sock_dir, "d.sock"), "echo", "hello")
    assert (result.returncode, result.stdout) == (0, b"hello\n")
    assert [type(e) for e in events] == [Accepted, Requested, Decided, Started, Ended]
    assert len({e.session for e in events}) == 1 and len(events[0].session) == 16
    accepted, requested, decided, started, ended = events
    assert accepted.peer is not None and accepted.peer.pid > 0
    assert requested.argv == ("echo", "hello") and not requested.interactive
    assert decided.allowed and decided.argv == ("echo", "hello")
    assert started.pid > 0 and started.executable.endswith("/echo")
    assert (ended.status, ended.outcome) == (0, "ok")
    assert [e.time for e in events] == sorted(e.time for e in events)
