"""Serving sessions: the accept loop, shutdown on signals, the session log."""

from __future__ import annotations

import errno
import os
import signal
import socket
import sys
from dataclasses import dataclass

import trio

from capsudo.core import Hangup, Policy, SessionLimits, serve_session
from capsudo.proto import Error, Exit
from capsudo.transport import UnixChannel

# accept() failures that mean "out of resources right now": back off and retry.
_PRESSURE = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
PRESSURE_BACKOFF = 0.1


def log(line: str) -> None:
    sys.stderr.write(f"capsudod: {line}\n")
    sys.stderr.flush()


@dataclass
class ServerSettings:
    policy: Policy
    limits: SessionLimits
    max_sessions: int = 256


async def _run_session(channel, settings: ServerSettings, shutdown: Hangup, slots: trio.CapacityLimiter) -> None:
    try:
        record = await serve_session(channel, settings.policy, settings.limits, shutdown)
    finally:
        slots.release_on_behalf_of(channel)
    log(str(record))


async def _turn_away(channel, reason: str) -> None:
    with trio.move_on_after(1):
        try:
            await channel.send(Error(reason))
            await channel.send(Exit(1))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
    await channel.aclose()


async def serve_listener(listener, settings: ServerSettings) -> None:
    """Serve until SIGTERM, SIGINT or SIGHUP; then hang up running programs and return."""
    shutdown = Hangup()
    slots = trio.CapacityLimiter(settings.max_sessions)
    async with trio.open_nursery() as sessions:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async with trio.open_nursery() as accepting:

                async def stop_on_signal() -> None:
                    async for signum in signals:
                        log(f"{signal.Signals(signum).name}: stopping, hanging up running programs")
                        accepting.cancel_scope.cancel()
                        return

                accepting.start_soon(stop_on_signal)
                accepting.start_soon(_accept_loop, listener, settings, shutdown, slots, sessions)
        await listener.aclose()
        shutdown.event.set()
        # Programs get SIGHUP now and SIGKILL after the grace; what is still
        # in its handshake by then is cut off.
        sessions.cancel_scope.deadline = trio.current_time() + settings.limits.hangup_grace + 1


async def _accept_loop(listener, settings, shutdown, slots, sessions) -> None:
    under_pressure = False
    while True:
        try:
            channel = await listener.accept()
        except OSError as exc:
            if exc.errno not in _PRESSURE:
                raise
            if not under_pressure:
                log(f"cannot accept connections: {exc.strerror}; retrying")
            under_pressure = True
            await trio.sleep(PRESSURE_BACKOFF)
            continue
        if under_pressure:
            log("accepting connections again")
            under_pressure = False
        try:
            slots.acquire_on_behalf_of_nowait(channel)
        except trio.WouldBlock:
            log(f"session {channel.peer or channel.description} refused: {settings.max_sessions} sessions already running")
            sessions.start_soon(_turn_away, channel, f"too many sessions (limit {settings.max_sessions}); try again later")
            continue
        sessions.start_soon(_run_session, channel, settings, shutdown, slots)


async def serve_stdin(settings: ServerSettings) -> None:
    """Serve exactly one session on the connected Unix socket that is stdin."""
    sock = trio.socket.fromfd(0, socket.AF_UNIX, socket.SOCK_STREAM)
    # Our copy is the only one we keep: stdin becomes /dev/null, so the
    # client's end-of-file is not held up by a stray descriptor.
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    channel = UnixChannel(sock)
    shutdown = Hangup()
    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:

            async def hang_up_on_signal() -> None:
                async for _ in signals:
                    shutdown.event.set()
                    return

            nursery.start_soon(hang_up_on_signal)
            record = await serve_session(channel, settings.policy, settings.limits, shutdown)
            nursery.cancel_scope.cancel()
    log(str(record))
