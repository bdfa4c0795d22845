"""A Unix socket endpoint that is never reachable with looser permissions than asked.

The socket is bound inside a fresh private directory beside its final path,
given its owner and mode there, and only then renamed into place: at no
instant can anyone else connect to it under the wrong permissions.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import tempfile

import trio

from ._eager import EagerSocket
from ._owner import DEFAULT_MODE, Owner
from ._unix import UnixChannel

# sun_path holds 108 bytes, the last one a NUL: no client can reach a longer path.
_SUN_PATH_MAX = 107


class EndpointError(Exception):
    """The endpoint cannot be set up; the message says why, on one line."""


def _refuse_to_clobber(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise EndpointError(f"{path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
            return  # stale: nobody listens there any more
        raise EndpointError(f"{path} is a socket that cannot be probed ({exc.strerror}); refusing to replace it") from None
    finally:
        probe.close()
    raise EndpointError(f"{path} is in use by a running listener")


class UnixListener:
    """Accepts connections on a Unix socket path and removes it when closed."""

    def __init__(self, sock: socket.socket, path: str, **channel_options) -> None:
        self.socket = sock
        self._accepting = EagerSocket(sock)
        self.path = path
        st = os.lstat(path)
        self._identity = (st.st_dev, st.st_ino)
        self._channel_options = channel_options

    async def accept(self) -> UnixChannel:
        return UnixChannel(await self._accepting.accept(), **self._channel_options)

    def owns_path(self) -> bool:
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return False
        return (st.st_dev, st.st_ino) == self._identity

    async def aclose(self) -> None:
        # Only our own socket is removed: a successor may have replaced it.
        if self.socket.fileno() != -1 and self.owns_path():
            os.unlink(self.path)
        if self.socket.fileno() != -1:
            # A stdlib socket: trio is told itself, so no task stays waiting on a closed descriptor.
            trio.lowlevel.notify_closing(self.socket)
        self.socket.close()
        await trio.lowlevel.checkpoint()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.aclose()


async def open_unix_listener(
    path: str, *, owner: Owner | None = None, mode: int = DEFAULT_MODE, backlog: int = 128, **channel_options
) -> UnixListener:
    path = os.path.abspath(path)
    if len(os.fsencode(path)) > _SUN_PATH_MAX:
        raise EndpointError(f"cannot listen on {path}: longer than the {_SUN_PATH_MAX} bytes a socket address holds")
    _refuse_to_clobber(path)
    directory = os.path.dirname(path)
    try:
        private = tempfile.mkdtemp(prefix=".capsudo-", dir=directory)
    except OSError as exc:
        raise EndpointError(f"cannot create a socket in {directory}: {exc.strerror}") from None
    staging = os.path.join(private, "socket")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if len(os.fsencode(staging)) > _SUN_PATH_MAX:
            # The staging directory lengthens the path: bind through a short
            # alias of that directory, so that every path that fits works.
            directory_fd = os.open(private, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                sock.bind(f"/proc/self/fd/{directory_fd}/socket")
            finally:
                os.close(directory_fd)
        else:
            sock.bind(staging)
        if owner is not None:
            os.chown(staging, -1 if owner.uid is None else owner.uid, -1 if owner.gid is None else owner.gid)
        os.chmod(staging, mode)
        sock.listen(backlog)
        os.rename(staging, path)
    except OSError as exc:
        sock.close()
        raise EndpointError(f"cannot listen on {path}: {exc.strerror or exc}") from None
    finally:
        try:
            os.unlink(staging)
        except FileNotFoundError:
            pass
        os.rmdir(private)
    return UnixListener(sock, path, **channel_options)
