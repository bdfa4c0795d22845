"""Limits on what one client may ask of a daemon, and on how many it serves, with their defaults."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SessionLimits:
    # A client has this long from connecting to sending End.
    handshake_timeout: float = 10.0
    # Arguments plus environment entries: far above what execve accepts in
    # practice (its total is 2 MiB on Linux), so only a hostile client hits them.
    max_items: int = 65536
    # Everything a client sends before End, whatever the messages (a Secret
    # as much as an Arg): with max_handshakes, what bounds the memory that
    # connections still in their handshake can hold.
    max_bytes: int = 4 * 1024 * 1024
    # Messages of any kind before End (bounds a stream of repeated Winsize).
    max_handshake_messages: int = 131072
    # After the client hangs up: SIGHUP, then SIGKILL once this has passed.
    hangup_grace: float = 2.0


@dataclass(frozen=True)
class ConnectionLimits:
    """How many connections a daemon serves at once: in all, and from one peer.

    A peer is a uid on a Unix socket, a remote address on tcp://, a client
    certificate on tls://, a context id on vsock:// (MessageChannel.source).
    Every connection counts as a session from the moment it is accepted;
    until its End it also holds a handshake slot. The limits per peer are
    below the totals, so that no single holder can take every slot: one
    peer holds at most half the sessions and half the handshakes, and
    whatever it does, another peer finds room.
    """

    max_sessions: int = 256
    max_sessions_per_peer: int = 128
    # Legitimate handshakes last a millisecond or two, but a burst of clients
    # (32 threads of one program) has them all in progress at once; a
    # connection that sends nothing holds its slot until handshake_timeout.
    max_handshakes: int = 64
    max_handshakes_per_peer: int = 32
