"""A Unix socket endpoint that is never reachable with looser permissions than asked.

The socket is bound inside a fresh private directory beside its final path,
given its owner and mode there, and only then renamed into place: at no
instant can anyone else connect to it under the wrong permissions.

Every step inside the private directory goes through a descriptor of it,
never through its name: the directory lies beside the endpoint, where
another user may be able to rename things, and a name swapped for a
directory of theirs (holding a symlink called `socket`) must not make root
change the owner or mode of a file they chose. And a directory that other
users can write without the sticky bit (like sshd's StrictModes, every
directory from / down to the socket's) is refused at start, unless the
operator allows it: whoever can write there can replace the socket itself.
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


def unsafe_directory(directory: str) -> str | None:
    """Why a socket in `directory` could be replaced by another user; None when it cannot.

    Looks at the directory and each one above it, as the kernel resolves
    them: owned by root or by us, and writable by no one else unless the
    sticky bit keeps others from renaming what is not theirs (as in /tmp).
    """
    me = os.geteuid()
    current = os.path.realpath(directory)
    while True:
        try:
            st = os.stat(current)
        except FileNotFoundError:
            return None  # nothing to listen in: creating the socket says so
        except OSError as exc:
            return f"{current} cannot be examined: {exc.strerror}"
        if st.st_uid not in (0, me):
            return f"{current} belongs to uid {st.st_uid}, who could replace what is in it"
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX:
            who = "other users" if st.st_mode & stat.S_IWOTH else "its group"
            return f"{current} is writable by {who} and not sticky: they could replace the socket"
        parent = os.path.dirname(current)
        if parent == current:
            return None
        current = parent


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
    path: str,
    *,
    owner: Owner | None = None,
    mode: int = DEFAULT_MODE,
    backlog: int = 128,
    allow_unsafe_directory: bool = False,
    **channel_options,
) -> UnixListener:
    """Listen on `path` with exactly this owner and mode; EndpointError with one line otherwise.

    `allow_unsafe_directory` accepts a directory (or one above it) that other
    users could write: the operator's word that they are trusted.
    """
    path = os.path.abspath(path)
    if len(os.fsencode(path)) > _SUN_PATH_MAX:
        raise EndpointError(f"cannot listen on {path}: longer than the {_SUN_PATH_MAX} bytes a socket address holds")
    directory = os.path.dirname(path)
    if not allow_unsafe_directory and (why := unsafe_directory(directory)) is not None:
        raise EndpointError(f"refusing to listen on {path}: {why} (--allow-unsafe-directory to accept it)")
    _refuse_to_clobber(path)
    try:
        private = tempfile.mkdtemp(prefix=".capsudo-", dir=directory)
    except OSError as exc:
        raise EndpointError(f"cannot create a socket in {directory}: {exc.strerror}") from None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    staged = False
    directory_fd = -1
    try:
        directory_fd = _open_private(private)
        # Bound through the descriptor's own name in /proc, which no rename
        # elsewhere can redirect (and which keeps the address short).
        sock.bind(f"/proc/self/fd/{directory_fd}/socket")
        staged = True
        if owner is not None:
            os.chown("socket", -1 if owner.uid is None else owner.uid, -1 if owner.gid is None else owner.gid,
                     dir_fd=directory_fd, follow_symlinks=False)
        # Only we can write in the private directory: "socket" is our socket.
        os.chmod("socket", mode, dir_fd=directory_fd)
        sock.listen(backlog)
        os.rename("socket", path, src_dir_fd=directory_fd)
        staged = False
    except (OSError, EndpointError) as exc:
        sock.close()
        if isinstance(exc, EndpointError):
            raise
        raise EndpointError(f"cannot listen on {path}: {exc.strerror or exc}") from None
    finally:
        _clean_up(private, directory_fd, staged)
    return UnixListener(sock, path, **channel_options)


def _open_private(private: str) -> int:
    """A descriptor of the staging directory we just made, checked to be ours and private."""
    fd = os.open(private, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    st = os.fstat(fd)
    if st.st_uid != os.geteuid() or st.st_mode & 0o077:
        os.close(fd)
        raise EndpointError(f"the staging directory {private} was replaced while the socket was made; refusing")
    return fd


def _clean_up(private: str, directory_fd: int, staged: bool) -> None:
    """Remove what staging left; quietly, since another user may have moved things meanwhile."""
    if directory_fd >= 0:
        if staged:
            try:
                os.unlink("socket", dir_fd=directory_fd)
            except OSError:
                pass
        os.close(directory_fd)
    try:
        os.rmdir(private)
    except OSError:
        pass  # swapped away or no longer empty: not ours to chase
