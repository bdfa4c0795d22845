"""Who is at the other end of a Unix socket, as the kernel vouches for it."""

from __future__ import annotations

import errno
import socket
import struct
from dataclasses import dataclass

_UCRED = struct.Struct("3i")


@dataclass(frozen=True, slots=True)
class PeerCredentials:
    """The peer's process, user and group at connect time, and its security label."""

    pid: int
    uid: int
    gid: int
    label: str | None = None

    def __str__(self) -> str:
        text = f"pid={self.pid} uid={self.uid} gid={self.gid}"
        return f"{text} label={self.label}" if self.label else text


def peer_credentials(sock: socket.socket) -> PeerCredentials:
    """SO_PEERCRED, and SO_PEERSEC where the system has a security module."""
    pid, uid, gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    return PeerCredentials(pid, uid, gid, _peer_label(sock))


def _peer_label(sock: socket.socket) -> str | None:
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERSEC, 256)
    except OSError as exc:
        # No LSM, or one that labels nothing: the system has no label to give.
        if exc.errno in (errno.ENOPROTOOPT, errno.EINVAL, errno.ENOSYS):
            return None
        raise
    label = raw.split(b"\0", 1)[0].decode("utf-8", "replace")
    return label or None
