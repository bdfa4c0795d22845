"""A blocking Unix connection for one-shot clients, standard library only.

A command-line client that only hands over its descriptors and waits for
a status needs no event loop; importing one would cost more than the whole
session.
"""

from __future__ import annotations

# The C module rather than `socket`: socket.py builds enums of every
# constant and imports selectors, which costs a client about 15 ms of
# start-up on a 2-core machine whose bare interpreter starts in 19 ms;
# array would pull in collections. This class needs neither.
import _socket as socket
import struct

TYPE_CHECKING = False  # typing and collections cost the client start-up time
if TYPE_CHECKING:
    from collections.abc import Sequence

from capsudo.proto import ProtocolError, lean


class BlockingUnixConnection:
    def __init__(self, path: str, known_types=lean.KNOWN_TYPES) -> None:
        self.path = path
        # The type codes a reply may have; a protocol that knows more passes its own.
        self.known_types = known_types
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            self.socket.connect(path)
        except BaseException:
            self.socket.close()
            raise

    def send(self, data: bytes, fds: Sequence[int] = ()) -> None:
        """Send encoded messages; descriptors ride on the first byte."""
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))] if fds else []
        sent = self.socket.sendmsg([data], ancillary)
        if sent < len(data):
            self.socket.sendall(memoryview(data)[sent:])

    def _read_exactly(self, size: int) -> bytes | None:
        chunks = bytearray()
        while len(chunks) < size:
            chunk = self.socket.recv(size - len(chunks))
            if not chunk:
                if chunks:
                    raise ProtocolError("the connection closed in the middle of a message")
                return None
            chunks += chunk
        return bytes(chunks)

    def receive(self) -> tuple[int, bytes] | None:
        """(type, payload) of the next message, or None when the peer closed."""
        header = self._read_exactly(lean.HEADER_SIZE)
        if header is None:
            return None
        type_code, length = lean.parse_header(header, known=self.known_types)
        payload = self._read_exactly(length) if length else b""
        if payload is None:
            raise ProtocolError("the connection closed in the middle of a message")
        return type_code, payload

    def close(self) -> None:
        self.socket.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
