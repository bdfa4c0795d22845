"""A sans-I/O decoder for the stream of control messages."""

from __future__ import annotations

from collections.abc import Iterator

from ._errors import ProtocolError
from ._budget import HandshakeBudget
from ._layout import CONTROL_HEADER_SIZE
from ._limits import MAX_CONTROL_PAYLOAD
from ._messages import End, Message, decode_header, decode_payload


class ControlDecoder:
    """Bytes in, whole control messages out.

    A payload is buffered only after its header passed the type and length
    checks, and never beyond what was fed, so a hostile length field costs
    nothing. After a ProtocolError the decoder stays broken: the stream has
    lost its framing and nothing after the error can be trusted.

    With a `budget`, each message is checked against what is left of it as
    well, and charged to it once decoded.
    """

    def __init__(
        self, max_payload: int = MAX_CONTROL_PAYLOAD, budget: HandshakeBudget | None = None, classes=None
    ) -> None:
        self.max_payload = max_payload
        self.budget = budget
        # Type code -> message class; None for the messages of the contract.
        self.classes = classes
        self._buffer = bytearray()
        self._pending: tuple[type, int] | None = None
        self._broken: ProtocolError | None = None

    def feed(self, data: bytes) -> None:
        if self._broken is not None:
            raise self._broken
        self._buffer += data

    def needed(self) -> int:
        """How many more bytes complete the next message (header first).

        A reader that must not consume past one message reads exactly this;
        0 means a whole message is buffered.
        """
        if self._broken is not None:
            raise self._broken
        if self._pending is None:
            if len(self._buffer) < CONTROL_HEADER_SIZE:
                return CONTROL_HEADER_SIZE - len(self._buffer)
            self._take_header()
        assert self._pending is not None
        return max(self._pending[1] - len(self._buffer), 0)

    def _take_header(self) -> None:
        try:
            self._pending = decode_header(bytes(self._buffer[:CONTROL_HEADER_SIZE]), self.max_payload, self.classes)
            if self.budget is not None:
                cls, length = self._pending
                self.budget.check(f"{cls.__name__} message", length)
        except ProtocolError as exc:
            self._broken = exc
            raise
        del self._buffer[:CONTROL_HEADER_SIZE]

    def next_message(self) -> Message | None:
        """The next whole message, or None until more bytes are fed."""
        if self._broken is not None:
            raise self._broken
        if self._pending is None:
            if len(self._buffer) < CONTROL_HEADER_SIZE:
                return None
            self._take_header()
        assert self._pending is not None
        cls, length = self._pending
        if len(self._buffer) < length:
            return None
        payload = bytes(self._buffer[:length])
        del self._buffer[:length]
        self._pending = None
        try:
            message = decode_payload(cls, payload)
        except ProtocolError as exc:
            self._broken = exc
            raise
        if self.budget is not None:
            self.budget.charge(length, is_end=cls is End)
        return message

    def messages(self) -> Iterator[Message]:
        """Every whole message that the bytes fed so far contain."""
        while (message := self.next_message()) is not None:
            yield message

    @property
    def at_boundary(self) -> bool:
        """True when no partial message is buffered (a clean place to stop)."""
        return self._pending is None and not self._buffer
