"""How long an endpoint lives: until a time, for a number of sessions, or both.

`expires` is an RFC 3339 time or a duration counted from the endpoint's
start (`30m`); `uses` is how many sessions it may run. Past either, the
endpoint stops accepting and its socket goes; a client that was already
connected is told why in one line. `at-expiry` says what programs still
running at the expiry get: a hang-up (the default, since the authority they
run under has ended) or the time to finish. A spent endpoint always lets
its last sessions finish: they were allowed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone

from capsudo.proto import Reason

from ._option_table import SECONDS, Option, UsageError, convert

AT_EXPIRY = {"hang-up": False, "finish": True}


@dataclass(frozen=True)
class Lifetime:
    #: The wall-clock time (seconds since the epoch) past which no session starts.
    expires_at: float | None = None
    #: Or: seconds from the endpoint's start.
    expires_after: float | None = None
    #: Sessions it may still run; None for no limit.
    uses: int | None = None
    #: What programs running at the expiry get: time to finish, else a hang-up.
    finish_at_expiry: bool = False

    def deadline(self, started: float) -> float | None:
        """The wall-clock expiry of an endpoint started at `started`."""
        if self.expires_at is not None:
            return self.expires_at
        if self.expires_after is not None:
            return started + self.expires_after
        return None


def parse_expiry(raw: object, label: str) -> tuple[float | None, float | None]:
    """(expires_at, expires_after) from a time (RFC 3339, or a TOML datetime) or a duration."""
    if isinstance(raw, datetime):
        return _epoch(raw, label, raw), None
    if isinstance(raw, str) and "T" in raw.upper() and ":" in raw:
        try:
            moment = datetime.fromisoformat(raw.replace("z", "Z"))
        except ValueError:
            raise UsageError(f"{label} takes an RFC 3339 time such as 2026-12-31T00:00:00Z or a duration "
                             f"such as 30m, got {raw!r}") from None
        return _epoch(moment, label, raw), None
    after = convert(Option("expires", SECONDS, minimum=0.001), raw, label)
    return None, after


def _epoch(moment: datetime, label: str, raw: object) -> float:
    if moment.tzinfo is None:
        raise UsageError(f"{label} needs a time zone (Z for UTC), got {raw!r}")
    return moment.timestamp()


def rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def expired_reason(expires_at: float) -> Reason:
    return Reason("expired", f"this capability expired at {rfc3339(expires_at)}")


def spent_reason() -> Reason:
    return Reason("spent", "this capability has no uses left")


def revoked_reason() -> Reason:
    return Reason("revoked", "this capability was revoked")


def now() -> float:
    return time.time()
