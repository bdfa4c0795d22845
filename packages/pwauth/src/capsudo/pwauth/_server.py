"""The accept loop, one task per client, and the chained commands started.

Each connection is read for its first message only, under a time limit.
PAM runs in worker threads (a bounded number), so a slow module, a silent
client or one that leaves mid-check holds up nobody else. Checks for one
user run one at a time and a failure is answered only once the failure
delay has passed since the check began, so guessing in parallel gains
nothing; the failure record locks a user out after repeated failures.
With --remember, a caller on a terminal whose ticket is still valid is
handed over without a password, its first message left unread.
"""

from __future__ import annotations

import math
import os
import pwd
import select
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from capsudo.core import ConnectionLimits, ServedEndpoint, new_session_id, stop_on_signals
from capsudo.proto import Error, Exit, Message, ProtocolError, Unauthorized, lean, reason
from capsudo.transport import EndpointError, UnixChannel, open_unix_listener

from ._chain import ChainError, output_descriptor, start_chained
from ._first_message import _ANCILLARY_SPACE, _close_descriptors, read_first_message, wipe
from ._pam import Outcome, Verdict, check_secret
from ._settings import FrontEndSettings
from ._throttle import FailureRecord
from ._tickets import Terminal, Tickets, peer_pidfd_supported, terminal_of

# How long a reply may take to leave, and how long we keep reading what the
# client sent after its first message before closing: closing with unread
# bytes would reset the connection, and a client still sending its handshake
# would see EPIPE instead of our reply.
REPLY_TIMEOUT = 2.0
DRAIN_TIMEOUT = 1.0
DRAIN_LIMIT = 256 * 1024
USER_LOOKUP_TIMEOUT = 5.0

SECRET_REFUSED = reason("secret-invalid").text


def log(line: str) -> None:
    sys.stderr.write(f"capsudod-pwauth: {line}\n")
    sys.stderr.flush()


def _quoted(text: str) -> str:
    """Text as one quoted token of a log line: no line breaks, no control bytes."""
    cleaned = "".join(c if c.isprintable() else " " for c in text)
    return '"' + cleaned.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _user_name(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def _peer_hung_up(sock: trio.socket.SocketType) -> bool:
    """True when the client closed its end (POLLHUP: both directions are shut)."""
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    return any(events & select.POLLHUP for _, events in poller.poll(0))


async def _peek_type(sock: trio.socket.SocketType) -> int | None:
    """The type of the first message, leaving every byte (and descriptor) queued; None if the peer closed."""
    while True:
        # No room for control data: descriptors stay queued for the chained command.
        header = await sock.recv(lean.HEADER_SIZE, socket.MSG_PEEK)
        if not header:
            return None
        if len(header) == lean.HEADER_SIZE:
            return lean.parse_header(header)[0]
        await trio.sleep(0.01)  # a header split across writes: rare, and bounded by the handshake timeout


class UserTurns:
    """One password check at a time per user, the failure delay included."""

    def __init__(self) -> None:
        self._locks: dict[int, tuple[trio.Lock, list[int]]] = {}

    @asynccontextmanager
    async def turn(self, uid: int) -> AsyncIterator[None]:
        lock, users = self._locks.setdefault(uid, (trio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:  # trio's Lock is fair: first come, first served
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._locks[uid]

    def __len__(self) -> int:
        return len(self._locks)


class Client:
    """Who is at the other end of one connection, for the log."""

    def __init__(self, channel: UnixChannel, user: str | None) -> None:
        self.channel = channel
        self.uid = channel.peer.uid
        self.pid = channel.peer.pid
        self.user = user
        # The id the chained capsudod serves the session under: one id in both logs and the audit.
        self.session = new_session_id()
        # Its terminal session, when tickets are kept and it has one.
        self.terminal: Terminal | None = None

    def __str__(self) -> str:
        return f"session={self.session} user={self.user or '?'} uid={self.uid} pid={self.pid}"


class FrontEnd:
    def __init__(self, settings: FrontEndSettings, check=check_secret) -> None:
        self.settings = settings
        self._check_secret = check
        self._failures = FailureRecord(settings.max_failures, settings.failure_window)
        self._turns = UserTurns()
        self._tickets = Tickets(settings.remember) if settings.remember > 0 else None
        self._pam_threads = trio.CapacityLimiter(settings.max_pam_threads)
        self._output_fd = output_descriptor()
        self._chained_nursery: trio.Nursery | None = None
        self.running: set[trio.Process] = set()

    # --- serving -----------------------------------------------------------

    async def run(self, listener, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Serve on `listener` until stop(); then the chained commands get SIGTERM, and the grace."""
        limits = ConnectionLimits(
            max_sessions=self.settings.max_clients,
            max_sessions_per_peer=self.settings.max_clients_per_user,
            max_handshakes=self.settings.max_clients,
            max_handshakes_per_peer=self.settings.max_clients_per_user,
        )
        async with trio.open_nursery() as chained:
            self._chained_nursery = chained
            # Connections are served until their hand-over, within the slots
            # of core's accept loop: in all and per user (the peer's uid).
            self._endpoint = ServedEndpoint(listener, self._serve_connection, log=log, limits=limits,
                                            hang_up=self._stop_chained)
            await self._endpoint.run(task_status=task_status)

    def stop(self) -> None:
        self._endpoint.stop()

    async def _stop_chained(self) -> None:
        if self.running:
            log(f"sending SIGTERM to {len(self.running)} chained command(s)")
            for process in list(self.running):
                process.send_signal(signal.SIGTERM)
        self._chained_nursery.cancel_scope.deadline = trio.current_time() + self.settings.shutdown_grace

    async def _serve_connection(self, channel: UnixChannel) -> None:
        try:
            if channel.peer is None:
                log("a connection whose peer cannot be identified: closed")
                return
            await self._serve_client(channel)
        finally:
            await channel.aclose()

    async def _lookup_user(self, uid: int) -> str | None:
        # NSS may be remote (LDAP, sssd): not on the event loop, and not forever.
        with trio.move_on_after(USER_LOOKUP_TIMEOUT):
            return await trio.to_thread.run_sync(_user_name, uid, abandon_on_cancel=True)
        return None

    async def _serve_client(self, channel: UnixChannel) -> None:
        client = Client(channel, await self._lookup_user(channel.peer.uid))
        if self._tickets is not None and client.user is not None:
            client.terminal = terminal_of(channel.socket, client.pid, client.uid)
        remembered = None
        try:
            with trio.move_on_after(self.settings.handshake_timeout) as timer:
                remembered = await self._remembered(client)
                if remembered is None:
                    first = await read_first_message(channel.socket, self.settings.max_secret)
        except ProtocolError as exc:
            await self._finish(client, "bad-message", str(exc), Error(f"protocol error: {exc}"), Exit(1))
            return
        except OSError as exc:
            self._record(client, "gone", f"connection failed: {exc.strerror or exc}")
            return
        if timer.cancelled_caught:
            timeout = self.settings.handshake_timeout
            await self._finish(client, "timeout", f"no first message within {timeout:g} s",
                               Error(f"no message within {timeout:g} s"), Exit(1))
            return
        if remembered is not None:
            await self._hand_over(client, remembered, outcome="remembered")
            return
        if first is None:
            self._record(client, "closed", "the client closed without sending anything")
            return
        secret = first.secret
        try:
            await self._answer(client, first, secret)
        finally:
            if secret is not None:
                wipe(secret)

    async def _remembered(self, client: Client) -> str | None:
        """Why a caller goes through without a password (its terminal has a
        ticket and it sends no Secret), or None."""
        if client.terminal is None:
            return None
        left = self._tickets.left(client.terminal, trio.current_time())
        if left <= 0:
            return None
        type_code = await _peek_type(client.channel.socket)
        if type_code is None or type_code == lean.SECRET:
            return None  # read and checked as ever: a Secret is never passed on
        return f"a ticket for {client.terminal}, {math.ceil(left)} s left"

    async def _answer(self, client: Client, first, secret: bytearray | None) -> None:
        if client.user is None:
            await self._finish(client, "unknown-user", "the uid has no user name",
                               Error(f"uid {client.uid} has no user name, so no password can be checked"), Exit(1))
            return
        if not first.is_clean_secret:
            # A client asks without a password first (it may not need one): the usual case.
            why = ("a password came with descriptors; asked for it again" if first.had_descriptors
                   else "no password yet, asked for one")
            prompt = f"[capsudo] {client.user}@{socket.gethostname()}'s password: "
            await self._finish(client, "challenged", why, Unauthorized(prompt))
            return
        if first.length == 0:
            await self._finish(client, "refused", "empty secret", Error("empty secret refused"), Exit(1))
            return
        if secret is None:  # longer than the limit: its payload was never read
            limit = self.settings.max_secret
            await self._finish(client, "refused", f"secret of {first.length} bytes",
                               Error(f"secret longer than {limit} bytes refused"), Exit(1))
            return
        verdict = await self._check(client, secret)
        detail = verdict.reason
        if verdict.messages:
            detail += " (" + " / ".join(verdict.messages) + ")"
        if verdict.outcome is Outcome.ACCEPTED:
            if client.terminal is not None:
                # From the check, not the hand-over: the window starts when the password was right.
                self._tickets.issue(client.terminal, trio.current_time())
                detail += f"; remembered for {client.terminal}"
            await self._hand_over(client, detail)
            return
        await self._finish(client, verdict.outcome.value, detail, Error(self._refusal_text(client, verdict)), Exit(1))

    def _refusal_text(self, client: Client, verdict: Verdict) -> str:
        if verdict.outcome is Outcome.REFUSED:
            return SECRET_REFUSED
        if verdict.outcome is Outcome.LOCKED:
            return verdict.reason
        if verdict.outcome is Outcome.DENIED:
            return f"the account check failed for {client.user}: {verdict.reason}"
        if verdict.outcome is Outcome.EXPIRED:
            return f"the password of {client.user} has expired; change it, then try again"
        return f"the password could not be checked: {verdict.reason}"

    async def _check(self, client: Client, secret: bytearray) -> Verdict:
        """PAM's verdict, under the user's turn, the lock-out and the failure delay."""
        settings = self.settings
        async with self._turns.turn(client.uid):
            wait = self._failures.retry_after(client.uid, trio.current_time())
            if wait > 0:
                wipe(secret)
                return Verdict(Outcome.LOCKED,
                               f"too many failed attempts for {client.user}; try again in {math.ceil(wait)} s")
            started = trio.current_time()
            try:
                with trio.fail_after(settings.pam_timeout):
                    verdict = await trio.to_thread.run_sync(
                        self._check_secret, settings.service, client.user, secret,
                        abandon_on_cancel=True, limiter=self._pam_threads,
                    )
            except trio.TooSlowError:
                verdict = Verdict(Outcome.ERROR, f"PAM gave no answer within {settings.pam_timeout:g} s")
            finally:
                # The thread wiped it already, unless it never ran or was left behind.
                wipe(secret)
            if verdict.outcome is Outcome.ACCEPTED:
                self._failures.succeeded(client.uid)
            else:
                self._failures.failed(client.uid, trio.current_time())
                # Held within the turn: parallel guesses for one user queue up.
                await trio.sleep_until(started + max(settings.fail_delay, verdict.requested_delay))
        return verdict

    async def _hand_over(self, client: Client, detail: str, outcome: str = "accepted") -> None:
        channel = client.channel
        if _peer_hung_up(channel.socket):
            self._record(client, outcome, f"{detail}; the client left before the hand-over")
            return
        try:
            process = await start_chained(self.settings.command, channel.socket.fileno(), self._output_fd,
                                          session_id=client.session)
        except ChainError as exc:
            await self._finish(client, outcome, f"{detail}; {exc}", Error(str(exc)), Exit(1))
            return
        self.running.add(process)
        assert self._chained_nursery is not None
        self._chained_nursery.start_soon(self._watch, process, str(client))
        self._record(client, outcome, f"{detail}; {self.settings.command[0]} pid={process.pid}")

    async def _watch(self, process: trio.Process, who: str) -> None:
        try:
            await process.wait()
        finally:
            if process.returncode is None:
                # The front-end is stopping and the grace is over.
                process.kill()
                with trio.CancelScope(shield=True):
                    await process.wait()
            self.running.discard(process)
            log(f"{who} chained pid={process.pid} ended status={_status(process.returncode)}")

    # --- replies and the log -------------------------------------------------

    def _record(self, client: Client, outcome: str, detail: str, delivered: bool = True) -> None:
        line = f"{client} outcome={outcome} detail={_quoted(detail)}"
        if not delivered:
            line += " reply=undelivered"
        log(line)

    async def _finish(self, client: Client, outcome: str, detail: str, *replies: Message) -> None:
        delivered = await self._reply(client.channel, *replies)
        self._record(client, outcome, detail, delivered)

    async def _reply(self, channel: UnixChannel, *replies: Message, drain: bool = True) -> bool:
        delivered = False
        with trio.move_on_after(REPLY_TIMEOUT):
            try:
                for message in replies:
                    await channel.send(message)
                delivered = True
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
                pass
        if delivered and drain:
            await _drain(channel.socket)
        return delivered


def _status(returncode: int | None) -> str:
    if returncode is None:
        return "?"
    return str(128 - returncode if returncode < 0 else returncode)


async def _drain(sock: trio.socket.SocketType) -> None:
    """Read and drop what the client still sends, until it closes (bounded)."""
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        return
    budget = DRAIN_LIMIT
    with trio.move_on_after(DRAIN_TIMEOUT):
        while budget > 0:
            try:
                data, ancillary, _, _ = await sock.recvmsg(min(budget, 65536), _ANCILLARY_SPACE,
                                                           socket.MSG_CMSG_CLOEXEC)
            except OSError:
                return
            _close_descriptors(ancillary)
            if not data:
                return
            budget -= len(data)


async def run_front_end(settings: FrontEndSettings) -> int:
    try:
        listener = await open_unix_listener(settings.endpoint, owner=settings.owner, mode=settings.mode,
                                            allow_unsafe_directory=settings.allow_unsafe_directory)
    except EndpointError as exc:
        log(str(exc))
        return 1
    if os.geteuid() != 0:
        log("warning: not running as root; PAM can check only this process's own user")
    log(f"listening on {listener.path}: PAM service {settings.service!r}, then {' '.join(settings.command)}")
    if settings.remember > 0:
        if peer_pidfd_supported():
            log(f"remembering a password for {settings.remember:g} s per terminal session (in memory only)")
        else:
            log("warning: --remember needs the peer's pidfd (Linux 6.5); every call will be asked")
    front_end = FrontEnd(settings)
    async with trio.open_nursery() as nursery:
        await nursery.start(front_end.run, listener)
        # SIGTERM, SIGINT or SIGHUP: stop accepting, then the chained commands.
        await stop_on_signals(log, [front_end])
    return 0
