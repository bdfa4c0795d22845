"""Serving many sessions on a listener: the accept loop shared by the daemons.

Sessions run side by side, within the slots of ConnectionLimits: sessions
and handshakes in all and per peer. A client past any of them is told which
and turned away at once, holding no slot. When accept() runs out of
resources (descriptors, memory) the loop backs off instead of spinning.
SIGTERM, SIGINT or SIGHUP stop it: no more accepting, running sessions are
asked to hang up, and those still around after the grace are cancelled.

A connection leaves its handshake slot when read_request() has its End: the
slot travels with the session's task (a context variable), so that the
sessions a daemon or proxy serves need not pass it along.
"""

from __future__ import annotations

import contextvars
import errno
import signal
import sys
from collections import Counter
from collections.abc import Awaitable, Callable

import trio

from capsudo.proto import Error, Exit, ProtocolError
from capsudo.transport import MessageChannel, close_fds

from ._limits import ConnectionLimits

# accept() failures that mean "out of resources right now": back off and retry.
_PRESSURE = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
PRESSURE_BACKOFF = 0.1
# How long a turned-away client has to take its answer and go.
TURN_AWAY_LINGER = 1.0
# Turned-away clients given that second at once; past them a refusal is sent
# and the connection closed at once, so that a flood of refused connections
# costs no more than this many descriptors for a second.
MAX_LINGERING = 64
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

ServeOne = Callable[[MessageChannel], Awaitable[object]]


class Logger:
    def __init__(self, program: str) -> None:
        self.program = program

    def __call__(self, line: str) -> None:
        sys.stderr.write(f"{self.program}: {line}\n")
        sys.stderr.flush()


async def turn_away(channel: MessageChannel, reason: str, *, linger: bool = True) -> None:
    """Tell a client why it cannot be served, and close.

    The client may still be sending its request: closing at once would make
    its next write fail (EPIPE) before it reads the reason. So what it sends
    is read and dropped until it closes, within the same bound of a second
    (unless `linger` is false: then the reply goes out and the line closes).
    """
    with trio.move_on_after(TURN_AWAY_LINGER):
        try:
            await channel.send(Error(reason))
            await channel.send(Exit(1))
            while linger and (received := await channel.receive()) is not None:
                close_fds(received.fds)
        except (ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
    with trio.CancelScope(shield=True):
        await channel.aclose()


class Slot:
    """One admitted connection: a session, and until its End a handshake too."""

    __slots__ = ("_slots", "source", "in_handshake")

    def __init__(self, slots: "Slots", source: str | None) -> None:
        self._slots = slots
        self.source = source
        self.in_handshake = True

    def finish_handshake(self) -> None:
        if self.in_handshake:
            self.in_handshake = False
            self._slots._leave_handshake(self.source)

    def release(self) -> None:
        self.finish_handshake()
        self._slots._leave_session(self.source)


class Slots:
    """The sessions and handshakes in progress, in all and per peer, against ConnectionLimits."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self.sessions = 0
        self.handshakes = 0
        self._sessions_of: Counter[str | None] = Counter()
        self._handshakes_of: Counter[str | None] = Counter()

    def refusal(self, source: str | None) -> str | None:
        """Why a new connection from `source` cannot be taken now, or None.

        The peer's own limits first: a holder of too many is told so, not
        sent to retry against totals it fills itself.
        """
        limits = self.limits
        who = source or "this peer"
        if self._sessions_of[source] >= limits.max_sessions_per_peer:
            return f"too many sessions from {who} (limit {limits.max_sessions_per_peer} per peer); try again later"
        if self._handshakes_of[source] >= limits.max_handshakes_per_peer:
            return (f"too many connections from {who} still in their handshake "
                    f"(limit {limits.max_handshakes_per_peer} per peer); try again later")
        if self.sessions >= limits.max_sessions:
            return f"too many sessions (limit {limits.max_sessions}); try again later"
        if self.handshakes >= limits.max_handshakes:
            return f"too many connections still in their handshake (limit {limits.max_handshakes}); try again later"
        return None

    def admit(self, source: str | None) -> Slot:
        self.sessions += 1
        self.handshakes += 1
        self._sessions_of[source] += 1
        self._handshakes_of[source] += 1
        return Slot(self, source)

    def _leave_handshake(self, source: str | None) -> None:
        self.handshakes -= 1
        _decrement(self._handshakes_of, source)

    def _leave_session(self, source: str | None) -> None:
        self.sessions -= 1
        _decrement(self._sessions_of, source)


def _decrement(counts: Counter, key) -> None:
    counts[key] -= 1
    if counts[key] <= 0:
        del counts[key]  # a peer that holds nothing costs no memory


_current_slot: contextvars.ContextVar[Slot | None] = contextvars.ContextVar("capsudo_slot", default=None)


def handshake_finished() -> None:
    """The connection served by this task has sent End: its handshake slot is free again."""
    slot = _current_slot.get()
    if slot is not None:
        slot.finish_handshake()


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
    limits: ConnectionLimits,
    max_handshake_bytes: int | None,
    on_stop: Callable[[], Awaitable[object]] | None,
    stop_grace: float,
) -> None:
    """Accept and serve until a stop signal; `serve_one` returns the session's log line.

    Each connection may send `max_handshake_bytes` before End, capped from
    its first byte. At the stop, `on_stop` runs beside the sessions still
    going (to hang their programs up); whatever has not ended `stop_grace`
    plus a moment later is cancelled.
    """
    slots = Slots(limits)
    pressure = AcceptBackoff(log)
    lingering = 0

    async def run_one(channel: MessageChannel, slot: Slot) -> None:
        _current_slot.set(slot)
        try:
            outcome = await serve_one(channel)
        finally:
            slot.release()
        log(str(outcome))

    async def refuse(channel: MessageChannel, reason: str) -> None:
        nonlocal lingering
        linger = lingering < MAX_LINGERING
        lingering += linger
        try:
            await turn_away(channel, reason, linger=linger)
        finally:
            lingering -= linger

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
                        # Before any checkpoint: a multiplexer's reader, started
                        # with the channel, has not read a byte yet.
                        channel.limit_handshake(max_handshake_bytes)
                        reason = slots.refusal(channel.source)
                        if reason is not None:
                            log(f"session {channel.peer or channel.description} refused: {reason}")
                            sessions.start_soon(refuse, channel, reason)
                            continue
                        sessions.start_soon(run_one, channel, slots.admit(channel.source))

                accepting.start_soon(stop_on_signal)
                accepting.start_soon(accept_loop)
        await listener.aclose()
        if on_stop is not None:
            sessions.start_soon(on_stop)
        # What has not ended by the grace (plus a moment) is cut off.
        sessions.cancel_scope.deadline = trio.current_time() + stop_grace + 1
