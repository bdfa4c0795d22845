"""Serving many sessions on a listener: the accept loop, and an endpoint that starts and stops.

`serve()` accepts and runs a handler per connection, within the slots of
ConnectionLimits: sessions and handshakes in all and per peer. A client past
any of them is told which and turned away at once, holding no slot. When
accept() runs out of resources (descriptors, memory) the loop backs off
instead of spinning. It knows nothing of signals and stops when cancelled.

`ServedEndpoint` is one listener with its sessions, as an object to start
and stop: a command, a process serving many endpoints, or a test. Stopping
it closes the listener, asks the running sessions to hang up, and cancels
those still around after the grace. Signals are for a command's main() to
turn into stops (stop_on_signals).

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
from capsudo.transport import MessageChannel, close_fds, notify_ready, notify_reloading, notify_stopping

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


Handler = Callable[[MessageChannel], Awaitable[object]]


async def serve(
    listener,
    handler: Handler,
    *,
    log: Callable[[str], None],
    limits: ConnectionLimits = ConnectionLimits(),
    max_handshake_bytes: int | None = None,
    handler_nursery: trio.Nursery | None = None,
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept connections and run `handler` on each, within `limits`, until cancelled.

    In the manner of trio's serve_listeners: no signals, no shutdown policy.
    Readiness is reported through `task_status` once the loop accepts.
    Handlers run in `handler_nursery` (by default one of serve's own, so
    that cancelling serve cancels them too); what a handler returns, when
    not None, is its session's log line. Each connection may send
    `max_handshake_bytes` before End, capped from its first byte.
    """
    async with trio.open_nursery() as own:
        await _accept_loop(listener, handler, log, limits, max_handshake_bytes, handler_nursery or own, task_status)


async def _accept_loop(listener, handler, log, limits, max_handshake_bytes, nursery, task_status) -> None:
    slots = Slots(limits)
    pressure = AcceptBackoff(log)
    lingering = 0

    async def run_one(channel: MessageChannel, slot: Slot) -> None:
        _current_slot.set(slot)
        try:
            outcome = await handler(channel)
        finally:
            slot.release()
        if outcome is not None:
            log(str(outcome))

    async def refuse(channel: MessageChannel, reason: str) -> None:
        nonlocal lingering
        linger = lingering < MAX_LINGERING
        lingering += linger
        try:
            await turn_away(channel, reason, linger=linger)
        finally:
            lingering -= linger

    task_status.started()
    while True:
        channel = await pressure.accept(listener)
        # Before any checkpoint: a multiplexer's reader, started with the
        # channel, has not read a byte yet.
        channel.limit_handshake(max_handshake_bytes)
        reason = slots.refusal(channel.source)
        if reason is not None:
            log(f"session {channel.peer or channel.description} refused: {reason}")
            nursery.start_soon(refuse, channel, reason)
            continue
        nursery.start_soon(run_one, channel, slots.admit(channel.source))


class ServedEndpoint:
    """One listener and the sessions it accepted, started and stopped as one.

    A command, a supervisor of many endpoints or a test runs it
    (`await nursery.start(endpoint.run)`) and stops it (`endpoint.stop()`):
    the listener closes at once, `hang_up` asks the running sessions to end
    (their programs get SIGHUP), and whatever is left after `grace` (plus a
    moment) is cancelled. Cancelling `run` instead ends everything at once.
    """

    def __init__(
        self,
        listener,
        handler: Handler,
        *,
        log: Callable[[str], None],
        limits: ConnectionLimits = ConnectionLimits(),
        max_handshake_bytes: int | None = None,
        hang_up: Callable[[], Awaitable[object]] | None = None,
        grace: float = 0.0,
    ) -> None:
        self.listener = listener
        self._handler = handler
        self._log = log
        self._limits = limits
        self._max_handshake_bytes = max_handshake_bytes
        self._hang_up = hang_up
        self._grace = grace
        self._accepting = trio.CancelScope()
        self._let_finish = False
        self.stopped = trio.Event()

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Serve until stop(); returns when every session has ended or been cut off."""
        try:
            async with trio.open_nursery() as sessions:
                with self._accepting:
                    await serve(self.listener, self._handler, log=self._log, limits=self._limits,
                                max_handshake_bytes=self._max_handshake_bytes, handler_nursery=sessions,
                                task_status=task_status)
                await self.listener.aclose()
                if self._let_finish:
                    return  # the nursery waits for the sessions, however long they run
                if self._hang_up is not None:
                    sessions.start_soon(self._hang_up)
                # What has not ended by the grace (plus a moment) is cut off.
                sessions.cancel_scope.deadline = trio.current_time() + self._grace + 1
        finally:
            with trio.CancelScope(shield=True):
                await self.listener.aclose()
            self.stopped.set()

    def stop(self, *, let_finish: bool = False) -> None:
        """Stop accepting and wind the sessions down (see the class); returns at once.

        With `let_finish`, the sessions under way run on to their own end:
        what a reload does to an endpoint whose listener it replaces.
        """
        self._let_finish = let_finish
        self._accepting.cancel()


_held_signals: list[int] = []


def hold_stop_signals(signals=STOP_SIGNALS) -> None:
    """From now until stop_on_signals listens, remember a stop signal rather than die of it.

    A command calls this before it starts listening: a SIGTERM that comes
    between the socket's appearance and the serve loop is then a clean stop
    (socket removed, status 0), as one that comes later is.
    """
    for signum in signals:
        signal.signal(signum, lambda number, frame: _held_signals.append(number))


async def stop_on_signals(log: Callable[[str], None], endpoints, signals=STOP_SIGNALS, *,
                          reload: Callable[[], Awaitable[str]] | None = None) -> None:
    """Wait for SIGTERM, SIGINT or SIGHUP, then stop every endpoint; for a command's main() alone.

    With `reload`, SIGHUP calls it instead (it returns what is served now)
    and the wait goes on. A service manager hears STOPPING=1, or RELOADING=1
    then READY=1 (sd_notify), as each happens.
    """
    with trio.open_signal_receiver(*signals) as received:
        # Opened first, then looked at: a signal is either held or received.
        held = list(_held_signals)
        _held_signals.clear()
        while True:
            signum = held.pop(0) if held else await received.__anext__()
            name = signal.Signals(signum).name
            if signum == signal.SIGHUP and reload is not None:
                log(f"{name}: reloading the configuration")
                notify_reloading()
                notify_ready(await reload())
                continue
            log(f"{name}: stopping, hanging up running programs")
            notify_stopping(f"stopping on {name}, hanging up running programs")
            for endpoint in endpoints:
                endpoint.stop()
            return
