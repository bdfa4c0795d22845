"""Control messages over a Unix stream socket, descriptors as SCM_RIGHTS."""

from __future__ import annotations

import array
import re
import socket
from collections.abc import Sequence

import trio

from capsudo.proto import MAX_CONTROL_PAYLOAD, ControlDecoder, Fd, HandshakeBudget, Message, ProtocolError, encode_message

from ._channel import MessageChannel, Received, close_fds
from ._credentials import peer_credentials
from ._eager import EagerSocket

# Room for more descriptors than any message may carry, so a peer that sends
# too many is told so instead of having the extra ones silently dropped.
DEFAULT_MAX_FDS = 8
# The most one read asks for: recvmsg allocates its whole buffer up front, so
# asking for all a header announces would let a peer's length field, not the
# bytes it sent, decide how much is allocated on every read.
READ_CHUNK = 64 * 1024


def _fds_from_ancillary(ancdata) -> list[int]:
    fds: list[int] = []
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            received = array.array("i")
            received.frombytes(data[: len(data) - len(data) % received.itemsize])
            fds.extend(received)
    return fds


#: The abstract address prefix of a connection that names its session's id (a front-end's, passed along).
SESSION_ADDRESS = b"\0capsudo-session/"
_SESSION_ID = re.compile(rb"[0-9a-f]{16}")


def is_session_id(text: str) -> bool:
    """Whether `text` has the form of a session id: 16 lowercase hex digits."""
    return _SESSION_ID.fullmatch(text.encode("ascii", "replace")) is not None


def _peer_session(sock: socket.socket) -> str | None:
    """The session id the peer's address names, if it is bound to SESSION_ADDRESS and an id."""
    try:
        address = sock.getpeername()
    except OSError:
        return None
    if isinstance(address, str):
        address = address.encode("utf-8", "surrogateescape")
    if not isinstance(address, bytes) or not address.startswith(SESSION_ADDRESS):
        return None
    name = address[len(SESSION_ADDRESS):]
    return name.decode("ascii") if _SESSION_ID.fullmatch(name) else None


class UnixChannel(MessageChannel):
    """One connection on a Unix stream socket.

    Reads exactly one message at a time and never a byte past it, so a
    front-end can read the first message and hand the live socket on.

    Given a stdlib socket, the channel drives that very socket (closing
    either closes both); a trio socket is taken over, and closed with the
    channel.
    """

    def __init__(
        self,
        sock: socket.socket | trio.socket.SocketType,
        *,
        max_payload: int = MAX_CONTROL_PAYLOAD,
        max_fds: int = DEFAULT_MAX_FDS,
        description: str | None = None,
        classes=None,
    ) -> None:
        if not isinstance(sock, socket.socket):
            sock = socket.socket(sock.family, sock.type, fileno=sock.detach())
        self._io = EagerSocket(sock)
        # The same socket for callers that drive it with trio themselves.
        self.socket = trio.socket.from_stdlib_socket(sock)
        self.max_payload = max_payload
        # Type code -> message class (None: the contract's), for a protocol that knows more.
        self._classes = classes
        self._max_fds = max_fds
        self._ancillary_space = socket.CMSG_SPACE(max_fds * array.array("i").itemsize)
        try:
            self.peer = peer_credentials(sock)
        except OSError:
            self.peer = None
        self.description = description or f"unix {self.peer or '?'}"
        self.source = f"uid {self.peer.uid}" if self.peer is not None else None
        self.peer_session = _peer_session(sock)
        self._budget = HandshakeBudget()
        self._send_lock = trio.Lock()

    def limit_handshake(self, max_bytes: int | None) -> None:
        # One message is read per receive() and never a byte past it, so the
        # next decoder is the first to see the new cap.
        self._budget.set_limit(max_bytes)

    def _check_open(self) -> None:
        if self.socket.fileno() == -1:
            raise trio.ClosedResourceError("this channel is closed")

    async def send(self, message: Message, fds: Sequence[int] = ()) -> None:
        data = encode_message(message)
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        async with self._send_lock:
            self._check_open()
            try:
                sent = await self._io.sendmsg([data], ancillary)
                while sent < len(data):
                    sent += await self._io.sendmsg([memoryview(data)[sent:]])
            except ConnectionError as exc:
                raise trio.BrokenResourceError(f"{self.description}: {exc.strerror}") from exc

    async def receive(self) -> Received | None:
        self._check_open()
        decoder = ControlDecoder(self.max_payload, self._budget, self._classes)
        fds: list[int] = []
        try:
            while (wanted := decoder.needed()) > 0:
                try:
                    data, ancdata, flags, _ = await self._io.recvmsg(
                        min(wanted, READ_CHUNK), self._ancillary_space, socket.MSG_CMSG_CLOEXEC
                    )
                except ConnectionError as exc:
                    raise trio.BrokenResourceError(f"{self.description}: {exc.strerror}") from exc
                arrived = _fds_from_ancillary(ancdata)
                fds.extend(arrived)
                if flags & socket.MSG_CTRUNC:
                    # The kernel cuts the descriptors short for two reasons:
                    # no room left in our buffer, or no descriptor left to us.
                    if len(arrived) >= self._max_fds:
                        raise ProtocolError("the peer sent more descriptors than a message may carry")
                    raise ProtocolError("descriptors the peer sent were lost: this process has no descriptor left")
                if not data:
                    if decoder.at_boundary and not fds:
                        return None
                    raise ProtocolError("the connection closed in the middle of a message")
                decoder.feed(data)
            message = decoder.next_message()
            assert message is not None
        except BaseException:
            close_fds(fds)
            raise
        if not isinstance(message, Fd):
            # Descriptors may only ride on Fd; anything else is closed unseen.
            close_fds(fds)
            return Received(message, [])
        if message.count != len(fds):
            close_fds(fds)
            raise ProtocolError(f"Fd announced {message.count} descriptors but {len(fds)} arrived")
        return Received(message, fds)

    async def aclose(self) -> None:
        self.socket.close()
        await trio.lowlevel.checkpoint()


async def connect_unix(path: str, *, session_id: str | None = None, **options) -> UnixChannel:
    """A channel to the socket at `path`; with `session_id`, one the daemon can tell the session's id by.

    The id travels as our end's address, an abstract name (SESSION_ADDRESS
    and the id), not as a message: a daemon that does not look at its
    peer's address sees an ordinary connection.
    """
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if session_id is not None:
            await sock.bind(SESSION_ADDRESS + session_id.encode("ascii"))
        await sock.connect(path)
    except BaseException:
        sock.close()
        raise
    return UnixChannel(sock, description=f"unix {path}", **options)
