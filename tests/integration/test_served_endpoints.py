"""Two endpoints served in one process, started and stopped from code.

Each is a ServedEndpoint on a real Unix listener, serving real sessions to
the real `capsudo` command; nothing here installs a signal handler.
"""

from __future__ import annotations

import os
import subprocess
import sys
from functools import partial

import trio

from capsudo.core import Hangup, Policy, ServedEndpoint, SessionLimits, serve_session
from capsudo.transport import open_unix_listener

CAPSUDO = [sys.executable, "-m", "capsudo.client"]


async def _endpoint(path: str, policy: Policy, lines: list[str]) -> ServedEndpoint:
    listener = await open_unix_listener(path)
    shutdown = Hangup()
    limits = SessionLimits()

    async def handler(channel):
        return await serve_session(channel, policy, limits, shutdown)

    return ServedEndpoint(listener, handler, log=lines.append, hang_up=partial(shutdown.hang_up_all, 1.0), grace=1.0)


async def _capsudo(path: str, *argv: str):
    return await trio.run_process([*CAPSUDO, "-S", path, "--", *argv], capture_stdout=True, capture_stderr=True,
                                  check=False, stdin=subprocess.DEVNULL)


def test_two_endpoints_in_one_process_one_stopped_while_the_other_serves(sock_dir):
    first_path, second_path = os.path.join(sock_dir, "first"), os.path.join(sock_dir, "second")
    first_log: list[str] = []
    second_log: list[str] = []

    async def scenario():
        first = await _endpoint(first_path, Policy(("echo", "first:")), first_log)
        second = await _endpoint(second_path, Policy(("sh", "-c"), fixed_arguments=False), second_log)
        async with trio.open_nursery() as nursery:
            await nursery.start(first.run)
            await nursery.start(second.run)

            assert (await _capsudo(first_path, "hello")).stdout == b"first: hello\n"
            assert (await _capsudo(second_path, "echo second")).stdout == b"second\n"

            results = {}

            async def long_session():
                results["long"] = await _capsudo(second_path, "sleep 1; echo finished")

            nursery.start_soon(long_session)
            with trio.fail_after(5):
                while not _long_program_running():
                    await trio.sleep(0.02)
            first.stop()
            with trio.fail_after(5):
                await first.stopped.wait()
            assert not os.path.exists(first_path)
            refused = await _capsudo(first_path, "again")
            assert refused.returncode == 1 and b"no endpoint at" in refused.stderr

            with trio.fail_after(10):
                while "long" not in results:
                    await trio.sleep(0.02)
            assert (results["long"].returncode, results["long"].stdout) == (0, b"finished\n")
            assert (await _capsudo(second_path, "echo still here")).stdout == b"still here\n"
            second.stop()
        assert not os.path.exists(second_path)

    trio.run(scenario)
    assert sum("status=0 outcome=ok" in line for line in first_log) == 1
    assert sum("status=0 outcome=ok" in line for line in second_log) == 3


def _long_program_running() -> bool:
    """The long session's program has started."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if cmdline.startswith(b"sh\0-c\0sleep 1; echo finished"):
            return True
    return False
