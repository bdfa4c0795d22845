"""Serving sessions: on a listener through the shared accept loop, or one on stdin.

The accept loop itself (session and handshake slots, back-off under pressure, stop on
SIGTERM, SIGINT or SIGHUP) is core's serve_connections; this module binds it
to the daemon's policy and limits, and hangs running programs up on stop.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from functools import partial

import trio

from capsudo.core import (STOP_SIGNALS, ConnectionLimits, Hangup, Logger, Policy, ServedEndpoint, SessionLimits,
                          serve_session)
from capsudo.transport import UnixChannel

log = Logger("capsudod")


@dataclass
class ServerSettings:
    policy: Policy
    limits: SessionLimits
    connections: ConnectionLimits = ConnectionLimits()


def served_endpoint(listener, settings: ServerSettings) -> ServedEndpoint:
    """The daemon's endpoint on `listener`: sessions under its policy; at the stop, programs hung up."""
    shutdown = Hangup()
    # What the program reads in CAPSUDO_ENDPOINT: the socket's path where there is one.
    endpoint = getattr(listener, "path", None)

    async def serve_one(channel):
        return await serve_session(channel, settings.policy, settings.limits, shutdown, endpoint=endpoint)

    return ServedEndpoint(
        listener,
        serve_one,
        log=log,
        limits=settings.connections,
        max_handshake_bytes=settings.limits.max_bytes,
        hang_up=partial(shutdown.hang_up_all, settings.limits.hangup_grace),
        # Programs get SIGHUP at the stop and SIGKILL after the grace.
        grace=settings.limits.hangup_grace,
    )


async def serve_stdin(settings: ServerSettings) -> None:
    """Serve exactly one session on the connected Unix socket that is stdin."""
    sock = socket.fromfd(0, socket.AF_UNIX, socket.SOCK_STREAM)
    # Our copy is the only one we keep: stdin becomes /dev/null, so the
    # client's end-of-file is not held up by a stray descriptor.
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    channel = UnixChannel(sock)
    shutdown = Hangup()
    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(*STOP_SIGNALS) as signals:

            async def hang_up_on_signal() -> None:
                async for _ in signals:
                    await shutdown.hang_up_all(settings.limits.hangup_grace)
                    return

            nursery.start_soon(hang_up_on_signal)
            record = await serve_session(channel, settings.policy, settings.limits, shutdown)
            nursery.cancel_scope.cancel()
    log(str(record))
