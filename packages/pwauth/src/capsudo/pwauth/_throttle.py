"""How often a user may get the password wrong.

A sliding window per user: once `max_failures` failures lie within the last
`window` seconds, further attempts are refused without a check until the
oldest of them has left the window. A success clears the user's record, as
pam_faillock does. Time is the caller's, so this page does no I/O and its
tests need no clock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable


class FailureRecord:
    def __init__(self, max_failures: int, window: float) -> None:
        # 0 turns the lock-out off (the delay after each failure still holds).
        self.max_failures = max_failures
        self.window = window
        self._failures: dict[Hashable, deque[float]] = {}

    def _recent(self, user: Hashable, now: float) -> deque[float] | None:
        failures = self._failures.get(user)
        if failures is None:
            return None
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if not failures:
            del self._failures[user]
            return None
        return failures

    def retry_after(self, user: Hashable, now: float) -> float:
        """0 when `user` may try now, else the seconds until they may."""
        if self.max_failures <= 0:
            return 0.0
        failures = self._recent(user, now)
        if failures is None or len(failures) < self.max_failures:
            return 0.0
        # The attempt is allowed once only max_failures - 1 remain in the window.
        return failures[len(failures) - self.max_failures] + self.window - now

    def failed(self, user: Hashable, now: float) -> None:
        if self.max_failures <= 0:
            return
        self._recent(user, now)
        failures = self._failures.setdefault(user, deque())
        failures.append(now)
        # Only the newest max_failures matter for the lock-out.
        while len(failures) > self.max_failures:
            failures.popleft()

    def succeeded(self, user: Hashable) -> None:
        self._failures.pop(user, None)

    def failures(self, user: Hashable, now: float) -> int:
        failures = self._recent(user, now)
        return 0 if failures is None else len(failures)

    def __len__(self) -> int:
        return len(self._failures)
