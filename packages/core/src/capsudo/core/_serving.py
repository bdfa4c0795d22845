"""Serving many sessions on a listener: the accept loop shared by the daemons.

Sessions run side by side; past `max_sessions` a client is told so and
turned away at once. When accept() runs out of resources (descriptors,
memory) the loop backs off instead of spinning. SIGTERM, SIGINT or SIGHUP
stop it: no more accepting, running sessions are asked to hang up, and those
still around after the grace are cancelled.
"""

from __future__ import annotations

import errno
import signal
import sys
from collections.abc import Awaitable, Callable

import trio

from capsudo.proto import Error, Exit, ProtocolError
from capsudo.transport import MessageChannel, close_fds

# accept() failures that mean "out of resources right now": back off and retry.
_PRESSURE = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
PRESSURE_BACKOFF = 0.1
# How long a turned-away client has to take its answer and go.
TURN_AWAY_LINGER = 1.0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

ServeOne = Callable[[MessageChannel], Awaitable[object]]


class Logger:
    def __init__(self, program: str) -> None:
        self.program = program

    def __call__(self, line: str) -> None:
        sys.stderr.write(f"{self.program}: {line}\n")
        sys.stderr.flush()


async def turn_away(channel: MessageChannel, reason: str) -> None:
    """Tell a client why it cannot be served, and close.

    The client may still be sending its request: closing at once would make
    its next write fail (EPIPE) before it reads the reason. So what it sends
    is read and dropped until it closes, within the same bound of a second.
    """
    with trio.move_on_after(TURN_AWAY_LINGER):
        try:
            await channel.send(Error(reason))
            await channel.send(Exit(1))
            while (received := await channel.receive()) is not None:
                close_fds(received.fds)
        except (ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
    with trio.CancelScope(shield=True):
        await channel.aclose()


class AcceptBackoff:
    """accept(), waiting out a lack of resources instead of spinning on it.

    Out of descriptors or memory, accept() fails at once for as long as the
    pressure lasts; each failure is retried after a pause, and only the first
    and the recovery are logged.
    """

    def __init__(self, log: Callable[[str], None]) -> None:
        self._log = log
        self._under_pressure = False

    async def accept(self, listener):
        while True:
            try:
                connection = await listener.accept()
            except OSError as exc:
                if exc.errno not in _PRESSURE:
                    raise
                if not self._under_pressure:
                    self._log(f"cannot accept connections: {exc.strerror}; retrying")
                    self._under_pressure = True
                await trio.sleep(PRESSURE_BACKOFF)
                continue
            if self._under_pressure:
                self._log("accepting connections again")
                self._under_pressure = False
            return connection


async def serve_connections(
    listener,
    serve_one: ServeOne,
    *,
    log: Logger,
    max_sessions: int,
    on_stop: Callable[[], Awaitable[object]] | None,
    stop_grace: float,
) -> None:
    """Accept and serve until a stop signal; `serve_one` returns the session's log line.

    At the stop, `on_stop` runs beside the sessions still going (to hang
    their programs up); whatever has not ended `stop_grace` plus a moment
    later is cancelled.
    """
    slots = trio.CapacityLimiter(max_sessions)
    pressure = AcceptBackoff(log)

    async def run_one(channel: MessageChannel) -> None:
        try:
            outcome = await serve_one(channel)
        finally:
            slots.release_on_behalf_of(channel)
        log(str(outcome))

    async with trio.open_nursery() as sessions:
        with trio.open_signal_receiver(*STOP_SIGNALS) as signals:
            async with trio.open_nursery() as accepting:

                async def stop_on_signal() -> None:
                    async for signum in signals:
                        log(f"{signal.Signals(signum).name}: stopping, hanging up running programs")
                        accepting.cancel_scope.cancel()
                        return

                async def accept_loop() -> None:
                    while True:
                        channel = await pressure.accept(listener)
                        try:
                            slots.acquire_on_behalf_of_nowait(channel)
                        except trio.WouldBlock:
                            log(f"session {channel.peer or channel.description} refused: "
                                f"{max_sessions} sessions already running")
                            sessions.start_soon(turn_away, channel,
                                                f"too many sessions (limit {max_sessions}); try again later")
                            continue
                        sessions.start_soon(run_one, channel)

                accepting.start_soon(stop_on_signal)
                accepting.start_soon(accept_loop)
        await listener.aclose()
        if on_stop is not None:
            sessions.start_soon(on_stop)
        # What has not ended by the grace (plus a moment) is cut off.
        sessions.cancel_scope.deadline = trio.current_time() + stop_grace + 1
