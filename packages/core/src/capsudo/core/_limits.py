"""Limits on what one client may ask of a daemon, with their defaults."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SessionLimits:
    # A client has this long from connecting to sending End.
    handshake_timeout: float = 10.0
    # Arguments plus environment entries: far above what execve accepts in
    # practice (its total is 2 MiB on Linux), so only a hostile client hits them.
    max_items: int = 65536
    max_bytes: int = 4 * 1024 * 1024
    # Messages of any kind before End (bounds a stream of repeated Winsize).
    max_handshake_messages: int = 131072
    # After the client hangs up: SIGHUP, then SIGKILL once this has passed.
    hangup_grace: float = 2.0
