"""What a client may send before End, counted across its control messages.

A daemon caps the configuration a client sends (--max-bytes), and that cap
is what bounds the memory a connection that never finishes can hold. So
every control message before End counts, whatever its type (a Secret as
much as an Arg), and the cap reaches the decoders: a header that announces
more than what is left is refused before a byte of its payload is read or
buffered. End lifts the budget; after it, only the per-message cap applies.

The count starts with the connection, so a budget set a moment after the
first bytes were decoded (a multiplexer reads ahead) still sees them all.
"""

from __future__ import annotations

from ._errors import ProtocolError


class HandshakeBudget:
    """Control payload bytes received before End, and the most allowed (None: no cap)."""

    __slots__ = ("limit", "used", "ended")

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit
        self.used = 0
        self.ended = False

    @property
    def active(self) -> bool:
        return self.limit is not None and not self.ended

    @property
    def left(self) -> int | None:
        """What may still be announced; None when nothing caps it."""
        return max(self.limit - self.used, 0) if self.active else None

    def check(self, what: str, length: int) -> None:
        """Refuse a message announcing `length` payload bytes if they do not fit (before reading them)."""
        left = self.left
        if left is not None and length > left:
            raise ProtocolError(
                f"{what} announces {length} bytes, more than the {left} left of the "
                f"{self.limit} a client may send before End"
            )

    def charge(self, length: int, *, is_end: bool) -> None:
        if self.ended:
            return
        self.used += length
        if is_end:
            self.ended = True

    def set_limit(self, limit: int | None) -> None:
        """Cap the bytes before End at `limit`, those already received included.

        What arrived before the cap was set and went past it cannot be
        refused unread any more; the next message is (nothing is left).
        """
        self.limit = limit
