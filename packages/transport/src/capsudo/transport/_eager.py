"""Socket calls that cost a system call when the kernel is ready, not a turn of the loop.

trio's socket methods yield to the scheduler after every call, even one that
succeeded at once. A session's handshake is a dozen small reads, and those
turns of the loop were most of what a session cost the daemon. Here a call
that can complete does so at once; the task waits only when the kernel says
it would block, and still yields every few calls, so a peer that keeps its
socket full cannot hold the loop.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import TypeVar

import trio

T = TypeVar("T")

# Calls in a row that may complete without letting another task run.
CALLS_BEFORE_YIELD = 16


class EagerSocket:
    """A non-blocking stdlib socket driven from trio, without a yield per call."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.socket = sock
        self._calls_since_yield = 0

    async def _call(self, wait: Callable[[socket.socket], object], call: Callable[..., T], *args) -> T:
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            try:
                result = call(*args)
            except BlockingIOError:
                await wait(self.socket)
                self._calls_since_yield = 0
                continue
            self._calls_since_yield += 1
            if self._calls_since_yield >= CALLS_BEFORE_YIELD:
                self._calls_since_yield = 0
                # Shielded: the call has happened and its result must not be lost.
                await trio.lowlevel.cancel_shielded_checkpoint()
            return result

    async def recvmsg(self, size: int, ancillary_size: int, flags: int = 0):
        return await self._call(trio.lowlevel.wait_readable, self.socket.recvmsg, size, ancillary_size, flags)

    async def sendmsg(self, buffers, ancillary=()) -> int:
        return await self._call(trio.lowlevel.wait_writable, self.socket.sendmsg, buffers, ancillary)

    async def accept(self) -> socket.socket:
        connection, _ = await self._call(trio.lowlevel.wait_readable, self.socket.accept)
        return connection
