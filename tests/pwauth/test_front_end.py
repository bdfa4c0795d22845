"""The front-end's scheduling with a stand-in for PAM: no root, no PAM needed.

One check at a time per user with the failure delay inside it, checks of
different users side by side, a PAM stack that never answers, the lock-out.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time

import pytest
import trio

from capsudo.proto import lean
from capsudo.pwauth._pam import Outcome, Verdict
from capsudo.pwauth._server import FrontEnd
from capsudo.pwauth._settings import FrontEndSettings
from capsudo.transport import open_unix_listener


def refuse(service, user, secret):
    return Verdict(Outcome.REFUSED, "Authentication failure")


@pytest.fixture
async def serve(sock_dir, nursery):
    """Start a FrontEnd with the given check and settings; returns its socket path."""

    async def start(check, **settings) -> str:
        path = os.path.join(sock_dir, "fe.sock")
        config = FrontEndSettings(endpoint=path, command=("/bin/true",), **settings)
        listener = await open_unix_listener(path)
        await nursery.start(FrontEnd(config, check=check).run, listener)
        return path

    return start


async def exchange(path: str, data: bytes) -> list:
    """Send bytes, return the replies as (type, text-or-status) until the front-end closes."""
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with sock:
        await sock.connect(path)
        await sock.send(data)
        received = b""
        while chunk := await sock.recv(65536):
            received += chunk
    replies = []
    while received:
        type_code, length = struct.unpack("<II", received[:8])
        payload, received = received[8 : 8 + length], received[8 + length :]
        replies.append((type_code, lean.exit_status(payload) if type_code == lean.EXIT else payload.decode()))
    return replies


REFUSED = [(lean.ERROR, "secret invalid"), (lean.EXIT, 1)]


async def test_guesses_for_one_user_are_checked_one_at_a_time_with_the_delay(serve):
    path = await serve(refuse, fail_delay=0.3, max_failures=0)
    finished = []
    started = trio.current_time()

    async def guess():
        assert await exchange(path, lean.secret(b"guess") + lean.end()) == REFUSED
        finished.append(trio.current_time() - started)

    async with trio.open_nursery() as guesses:
        for _ in range(4):
            guesses.start_soon(guess)
    assert sorted(finished)[-1] >= 4 * 0.3
    # Each answer came a delay after the one before: no two checks overlapped.
    gaps = [b - a for a, b in zip(sorted(finished), sorted(finished)[1:])]
    assert all(gap >= 0.25 for gap in gaps), finished


async def test_a_pam_stack_that_hangs_fails_the_check_and_blocks_no_one(serve):
    release = threading.Event()

    def hang(service, user, secret):
        release.wait(10)
        return Verdict(Outcome.ACCEPTED, "Success")

    path = await serve(hang, pam_timeout=0.5, fail_delay=0)
    try:
        async with trio.open_nursery() as clients:
            async def hung():
                replies = await exchange(path, lean.secret(b"x"))
                assert replies == [(lean.ERROR, "the password could not be checked: PAM gave no answer within 0.5 s"),
                                   (lean.EXIT, 1)]

            clients.start_soon(hung)
            await trio.sleep(0.1)
            begun = time.monotonic()
            (kind, prompt), = await exchange(path, lean.arg("id"))
            assert kind == lean.UNAUTHORIZED and prompt.endswith("'s password: ")
            assert time.monotonic() - begun < 0.3
    finally:
        release.set()


async def test_the_lock_out_answers_at_once_without_asking_pam(serve):
    calls = []

    def check(service, user, secret):
        calls.append(bytes(secret))
        return Verdict(Outcome.REFUSED, "Authentication failure")

    path = await serve(check, fail_delay=0.2, max_failures=2, failure_window=60)
    for _ in range(2):
        assert await exchange(path, lean.secret(b"x")) == REFUSED
    begun = time.monotonic()
    (kind, text), exit_reply = await exchange(path, lean.secret(b"x"))
    assert time.monotonic() - begun < 0.2
    assert kind == lean.ERROR and text.startswith("too many failed attempts for ") and text.endswith(" s")
    assert exit_reply == (lean.EXIT, 1)
    assert calls == [b"x", b"x"]
