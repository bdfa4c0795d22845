"""Remembered passwords: per-terminal tickets, as sudo keeps them.

With `--remember`, a successful check leaves a ticket for the caller's uid
on the caller's terminal, and for the terminal's session: the tty device,
the session id, and the start time of the session's leader, so a new login
that reuses the pid or the tty does not inherit it. A caller with no
controlling terminal never gets or uses one. A ticket lasts the duration
from the password that made it; using it does not renew it. Tickets live in
this process's memory only: restarting the front-end forgets them all.

The peer's process is read in /proc after it connected, so the pid it had at
connect time must still be that process: the kernel's pidfd of the peer
(SO_PEERPIDFD, Linux 6.5) says whether it has exited since, and with no pidfd
there is no ticket.
"""

from __future__ import annotations

import os
import select
import socket
from dataclasses import dataclass

# From linux/socket.h; Python has no name for it yet.
SO_PEERPIDFD = getattr(socket, "SO_PEERPIDFD", 77)


@dataclass(frozen=True)
class Terminal:
    """Whose terminal session a caller is in: what a ticket is keyed on."""

    uid: int
    tty: int  # the device number, /proc/PID/stat's tty_nr
    session: int  # the session id, the leader's pid
    leader_start: int  # the leader's start time, in clock ticks since boot

    def __str__(self) -> str:
        return f"tty={os.major(self.tty)}:{os.minor(self.tty)} session={self.session}"


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat from its third field on (after the command's name), or None."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            text = stat.read()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


# Indexes into _stat_fields: field N of proc(5) is at N - 3.
_SESSION, _TTY, _START = 6 - 3, 7 - 3, 22 - 3


def _exited(pidfd: int) -> bool:
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(0))


def peer_pidfd_supported() -> bool:
    """Whether this kernel gives a Unix socket's peer as a pidfd."""
    left, right = socket.socketpair()
    try:
        os.close(left.getsockopt(socket.SOL_SOCKET, SO_PEERPIDFD))
        return True
    except OSError:
        return False
    finally:
        left.close()
        right.close()


def terminal_of(sock: socket.socket, pid: int, uid: int) -> Terminal | None:
    """The terminal session of the peer of `sock` (whose pid and uid the
    kernel gave at connect time); None without a controlling terminal, or
    when it cannot be told for sure."""
    try:
        pidfd = sock.getsockopt(socket.SOL_SOCKET, SO_PEERPIDFD)
    except OSError:
        return None
    try:
        peer = _stat_fields(pid)
        if peer is None or int(peer[_TTY]) == 0:
            return None
        session = int(peer[_SESSION])
        leader = _stat_fields(session)
        # The leader gone: its pid may be anyone's by now.
        if leader is None or int(leader[_SESSION]) != session:
            return None
        # Read after the fields: a peer still running had that pid all along.
        if _exited(pidfd):
            return None
        return Terminal(uid, int(peer[_TTY]), session, int(leader[_START]))
    finally:
        os.close(pidfd)


class Tickets:
    """Tickets by terminal session, each valid for `duration` seconds from
    its issue. Time is the caller's (trio's clock), so this does no I/O."""

    def __init__(self, duration: float) -> None:
        self.duration = duration
        self._expiry: dict[Terminal, float] = {}

    def issue(self, terminal: Terminal, now: float) -> None:
        self._forget_expired(now)
        self._expiry[terminal] = now + self.duration

    def left(self, terminal: Terminal, now: float) -> float:
        """Seconds the terminal's ticket has left; 0 when it has none."""
        expiry = self._expiry.get(terminal)
        if expiry is None:
            return 0.0
        if expiry <= now:
            del self._expiry[terminal]
            return 0.0
        return expiry - now

    def _forget_expired(self, now: float) -> None:
        # At most one ticket per terminal session: a bound without a limit of its own.
        for terminal in [t for t, expiry in self._expiry.items() if expiry <= now]:
            del self._expiry[terminal]

    def __len__(self) -> int:
        return len(self._expiry)
