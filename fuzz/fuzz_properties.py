"""What every input, however hostile, must leave true: one check per fuzz target.

Each check takes the raw bytes a peer could send and raises AssertionError
(or lets an unexpected exception through) when the code under test breaks
its contract. The atheris runner calls them on generated inputs; the test
suite replays the kept corpus through them, so neither needs the other.

- control: the control decoder yields messages or ProtocolError, the same
  verdict whether the bytes come whole or one at a time, and what it yields
  encodes back to something that decodes to the same messages.
- frames: the same for the multiplexer's frame decoder.
- handshake: the daemon's read_request, over an in-memory channel that hands
  out real descriptors for Fd messages the way a Unix socket does, returns a
  request, None or Refused/ProtocolError exactly as a short
  independent statement of the rules predicts, never reads past End, and
  leaves no descriptor open behind it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence

from capsudo.core import daemon_protocol, read_request
from capsudo.proto import Refused
from capsudo.core._limits import SessionLimits
from capsudo.proto import (Arg, ControlDecoder, End, Env, Error, Exit, Fd, FrameDecoder, Message,
                           ProtocolError, Unauthorized, encode_frame, encode_message)
from capsudo.proto._messages import MESSAGE_CLASSES
from capsudo.transport import MessageChannel, Received, close_fds

__all__ = ["TARGETS", "check_control", "check_frames", "check_handshake", "HANDSHAKE_LIMITS",
           "handshake_verdict", "arrivals_from_bytes", "end_offset"]

MESSAGE_TYPES = tuple(MESSAGE_CLASSES.values())

# Small limits, so that short inputs reach every limit of the handshake.
HANDSHAKE_LIMITS = SessionLimits(max_items=6, max_bytes=64, max_handshake_messages=12)
# As many descriptors as a Unix channel accepts with one message.
CHANNEL_MAX_FDS = 8
# What only a daemon or a front-end sends.
CLIENT_MAY_NOT_SEND = (Exit, Error, Unauthorized)


def _decode_all(decoder_type: type, chunks: Sequence[bytes], drain: str):
    """(items, error text or None, decoder) after feeding the chunks in turn."""
    decoder = decoder_type()
    items: list = []
    try:
        for chunk in chunks:
            decoder.feed(chunk)
            items.extend(getattr(decoder, drain)())
    except ProtocolError as exc:
        return items, str(exc), decoder
    return items, None, decoder


def _bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def check_control(data: bytes) -> None:
    whole = _decode_all(ControlDecoder, [data], "messages")
    bytewise = _decode_all(ControlDecoder, _bytewise(data), "messages")
    assert whole[:2] == bytewise[:2], (whole[:2], bytewise[:2])
    messages, error, decoder = whole
    for message in messages:
        assert isinstance(message, MESSAGE_TYPES), message
    if error is None:
        # Nothing is lost or invented on the way: a partial message still
        # asks for bytes, a complete stream asks for the next header.
        assert decoder.needed() > 0
        again = _decode_all(ControlDecoder, [b"".join(map(encode_message, messages))], "messages")
        assert again[1] is None and again[0] == messages, (messages, again[:2])


def check_frames(data: bytes) -> None:
    whole = _decode_all(FrameDecoder, [data], "frames")
    bytewise = _decode_all(FrameDecoder, _bytewise(data), "frames")
    assert whole[:2] == bytewise[:2], (whole[:2], bytewise[:2])
    frames, error, _ = whole
    if error is None:
        again = _decode_all(FrameDecoder, [b"".join(map(encode_frame, frames))], "frames")
        assert again[1] is None and again[0] == frames, (frames, again[:2])


class ScriptedChannel(MessageChannel):
    """A peer's bytes as a MessageChannel, with the Unix channel's rules.

    An Fd message brings as many fresh descriptors as it announces (too many
    for one message is the Unix channel's ProtocolError); a stream that ends
    in the middle of a message is a ProtocolError, at a boundary it is None.
    """

    description = "scripted"

    def __init__(self, data: bytes, open_descriptor: Callable[[], int]) -> None:
        self._data = data
        self._open_descriptor = open_descriptor
        self.consumed = 0

    async def send(self, message, fds=()) -> None:
        raise AssertionError("the handshake sends nothing")

    async def receive(self) -> Received | None:
        decoder = ControlDecoder()
        while (wanted := decoder.needed()) > 0:
            chunk = self._data[self.consumed : self.consumed + wanted]
            if not chunk:
                if decoder.at_boundary:
                    return None
                raise ProtocolError("the connection closed in the middle of a message")
            self.consumed += len(chunk)
            decoder.feed(chunk)
        message = decoder.next_message()
        if not isinstance(message, Fd):
            return Received(message, [])
        if message.count > CHANNEL_MAX_FDS:
            raise ProtocolError("the peer sent more descriptors than a message may carry")
        return Received(message, [self._open_descriptor() for _ in range(message.count)])

    async def aclose(self) -> None:
        pass


def handshake_verdict(arrivals: Iterable[tuple[Message, int]], limits: SessionLimits) -> str:
    """What the rules say of a handshake: "request", "left" (the client went
    away before End) or "refused" (an Error goes back).

    `arrivals` yields each message with the number of descriptors that came
    with it, raises ProtocolError where the bytes break the wire contract,
    and ends where the client closed cleanly. A short statement of the
    rules, written apart from read_request so that each checks the other.
    """
    items = size = messages = 0
    delegated = False
    try:
        for message, descriptors in arrivals:
            if isinstance(message, Fd) and message.count != descriptors:
                return "refused"
            messages += 1
            if messages > limits.max_handshake_messages:
                return "refused"
            # Every message before End counts against max_bytes, a Secret as much as an Arg.
            size += len(message.payload())
            if size > limits.max_bytes:
                return "refused"
            if isinstance(message, (Arg, Env)):
                items += 1
                if items > limits.max_items:
                    return "refused"
            elif isinstance(message, Fd):
                if delegated or message.count != 3:
                    return "refused"
                delegated = True
            elif isinstance(message, End):
                return "request" if delegated else "refused"
            elif isinstance(message, CLIENT_MAY_NOT_SEND):
                return "refused"
    except ProtocolError:
        return "refused"
    return "left"


def arrivals_from_bytes(data: bytes, descriptors_for: Callable[[int], int]) -> Iterator[tuple[Message, int]]:
    """The messages in a client's bytes, each with the descriptors that would
    come with it (`descriptors_for` an Fd message's count)."""
    decoder = ControlDecoder()
    decoder.feed(data)
    for message in decoder.messages():
        yield message, descriptors_for(message.count) if isinstance(message, Fd) else 0
    if not decoder.at_boundary:
        raise ProtocolError("the connection closed in the middle of a message")


def end_offset(data: bytes) -> int:
    """Where the End of an accepted handshake stops. Everything before it
    re-encodes exactly (the lossy Error and Unauthorized would have been
    refused), so the encoded lengths add up to it."""
    offset = 0
    for message in _messages_until_end(data):
        offset += len(encode_message(message))
    return offset + len(encode_message(End()))


def _scripted_descriptors(count: int) -> int:
    # What ScriptedChannel hands out; past its maximum it refuses the message.
    if count > CHANNEL_MAX_FDS:
        raise ProtocolError("the peer sent more descriptors than a message may carry")
    return count


def _open_descriptors() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def check_handshake(data: bytes, limits: SessionLimits = HANDSHAKE_LIMITS) -> None:
    # Open both ways: a valid stdin as well as a valid stdout and stderr.
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        before = _open_descriptors()
        channel = ScriptedChannel(data, lambda: os.dup(null))
        coroutine = read_request(channel, daemon_protocol(limits))
        try:
            coroutine.send(None)
        except StopIteration as stop:
            request = stop.value
            verdict = "left" if request is None else "request"
        except (Refused, ProtocolError):
            request, verdict = None, "refused"
        else:
            coroutine.close()
            raise AssertionError("read_request waited for something other than its channel")

        expected = handshake_verdict(arrivals_from_bytes(data, _scripted_descriptors), limits)
        assert verdict == expected, (verdict, expected)
        if request is not None:
            assert channel.consumed == end_offset(data), "read past End"
            assert len(request.fds) == 3
            for fd in request.fds:
                os.fstat(fd)  # still open: the program is to get them
            assert request.argv == [m.value for m in _messages_until_end(data) if isinstance(m, Arg)]
            assert request.env_entries == [m.entry for m in _messages_until_end(data) if isinstance(m, Env)]
            close_fds(request.fds)
        assert _open_descriptors() == before, "a descriptor was left open"
    finally:
        os.close(null)


def _messages_until_end(data: bytes) -> list:
    decoder = ControlDecoder()
    decoder.feed(data)
    found = []
    for message in decoder.messages():
        if isinstance(message, End):
            break
        found.append(message)
    return found


TARGETS: dict[str, Callable[[bytes], None]] = {
    "control": check_control,
    "frames": check_frames,
    "handshake": check_handshake,
}
