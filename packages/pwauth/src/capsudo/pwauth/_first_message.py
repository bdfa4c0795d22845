"""The first message of a connection, read to the byte and not one further.

Everything after it belongs to the chained daemon, which reads the rest of
the handshake from the same socket. A Secret's payload lands in a bytearray
that can be wiped once PAM has seen it; any other message is known by its
header alone, its payload left unread.
"""

from __future__ import annotations

import array
import os
import socket
from dataclasses import dataclass

import trio

from capsudo.proto import ProtocolError, lean

# Room for a few descriptors: they are closed unseen, but a peer that sends
# them must not make the kernel truncate the control data unnoticed.
_ANCILLARY_SPACE = socket.CMSG_SPACE(8 * array.array("i").itemsize)


# A Describe is challenged like a session: the description comes after the
# password, from the daemon, which then reads the Describe from this socket.
FIRST_TYPES = lean.KNOWN_TYPES | {lean.DESCRIBE}


def wipe(buffer: bytearray) -> None:
    """Overwrite a secret in place (the same memory, not a new object)."""
    buffer[:] = bytes(len(buffer))


@dataclass
class FirstMessage:
    type_code: int
    # The payload length the header announced.
    length: int
    # Descriptors came with the message (they are closed already).
    had_descriptors: bool = False
    # The payload of a Secret that came without descriptors and within the
    # size limit; the caller wipes it.
    secret: bytearray | None = None

    @property
    def is_clean_secret(self) -> bool:
        return self.type_code == lean.SECRET and not self.had_descriptors


def _close_descriptors(ancillary) -> bool:
    """Close every descriptor in the ancillary data; True if there was any."""
    found = False
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds = array.array("i")
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
            for fd in fds:
                found = True
                try:
                    os.close(fd)
                except OSError:
                    pass
    return found


async def read_first_message(sock: trio.socket.SocketType, max_secret: int) -> FirstMessage | None:
    """The first message's header, and a Secret's payload; None if the peer
    closed before sending anything. Raises ProtocolError."""
    header = bytearray()
    had_descriptors = False
    while len(header) < lean.HEADER_SIZE:
        data, ancillary, flags, _ = await sock.recvmsg(
            lean.HEADER_SIZE - len(header), _ANCILLARY_SPACE, socket.MSG_CMSG_CLOEXEC
        )
        had_descriptors |= _close_descriptors(ancillary) or bool(flags & socket.MSG_CTRUNC)
        if not data:
            if not header and not had_descriptors:
                return None
            raise ProtocolError("the connection closed in the middle of a message")
        header += data
    type_code, length = lean.parse_header(bytes(header), known=FIRST_TYPES)
    first = FirstMessage(type_code, length, had_descriptors)
    if type_code != lean.SECRET or had_descriptors or length == 0 or length > max_secret:
        return first
    secret = bytearray(length)
    view = memoryview(secret)
    received = 0
    try:
        while received < length:
            count, ancillary, flags, _ = await sock.recvmsg_into(
                [view[received:]], _ANCILLARY_SPACE, socket.MSG_CMSG_CLOEXEC
            )
            first.had_descriptors |= _close_descriptors(ancillary) or bool(flags & socket.MSG_CTRUNC)
            if count == 0:
                raise ProtocolError("the connection closed in the middle of a message")
            received += count
    except BaseException:
        view.release()
        wipe(secret)
        raise
    view.release()
    if first.had_descriptors:
        wipe(secret)
    else:
        first.secret = secret
    return first
