"""A Unix socket endpoint that is never reachable with looser permissions than asked.

The socket is bound inside a fresh private directory beside its final path,
given its owner and mode there, and only then renamed into place: at no
instant can anyone else connect to it under the wrong permissions.

Every step after the parent directory is opened goes through descriptors
(the parent's and the private directory's), never through a name that
someone else could swap in between: in a directory another user can write,
they could otherwise exchange the private directory for one of theirs whose
`socket` is a symlink, and root would chown and chmod a file of their
choosing. Such a directory is refused at the start unless the caller insists
(allow_unsafe_directory), as sshd's StrictModes refuses a writable home.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import secrets
import socket
import stat

import trio

from ._eager import EagerSocket
from ._errors import EndpointError
from ._owner import DEFAULT_MODE, Owner
from ._unix import UnixChannel

# sun_path holds 108 bytes, the last one a NUL: no client can reach a longer path.
_SUN_PATH_MAX = 107


def _refuse_to_clobber(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise EndpointError(f"cannot listen on {path}: {exc.strerror}") from None
    if not stat.S_ISSOCK(st.st_mode):
        raise EndpointError(f"{path} exists and is not a socket; refusing to replace it")
    try:
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    except OSError as exc:
        raise EndpointError(f"cannot listen on {path}: {exc.strerror}") from None
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

    def __init__(self, sock: socket.socket, path: str, *, identity: tuple[int, int] | None = None,
                 **channel_options) -> None:
        self.socket = sock
        self._accepting = EagerSocket(sock)
        self.path = path
        if identity is None:
            st = os.lstat(path)
            identity = (st.st_dev, st.st_ino)
        # (st_dev, st_ino) of the socket file we made, to know it from a successor's.
        self._identity = identity
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
        # By name, between a check and the unlink: only someone who can write
        # the directory can swap the entry in between, and open_unix_listener
        # refuses such a directory unless told to allow it; even then, all
        # this can remove is an entry that whoever swapped it could remove too.
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


def _user_name(uid: int) -> str:
    try:
        return f"user {pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _group_name(gid: int) -> str:
    try:
        return f"group {grp.getgrgid(gid).gr_name} (gid {gid})"
    except KeyError:
        return f"gid {gid}"


def _unsafe_because(st: os.stat_result) -> str | None:
    """Why a directory lets someone else replace entries in it; None if nobody can.

    Its owner can change its mode at will, so it must be root or us. A
    group-writable directory is refused as well, even if the operator trusts
    the group: every member could take the endpoint's name (remove the
    socket, or put one of their own there for clients to lend their
    descriptors to), a power the socket's mode does not give them. A sticky
    directory (/tmp) is safe: there only an entry's owner may rename or
    remove it.
    """
    if st.st_uid not in (0, os.geteuid()):
        return f"it belongs to {_user_name(st.st_uid)}, who can change its permissions at will"
    if st.st_mode & stat.S_ISVTX:
        return None
    writers = []
    if st.st_mode & stat.S_IWGRP:
        writers.append(_group_name(st.st_gid))
    if st.st_mode & stat.S_IWOTH:
        writers.append("every user")
    if writers:
        return f"it is writable by {' and '.join(writers)} and not sticky, so others can replace what is put in it"
    return None


class _Replaced(Exception):
    """A name we had just made turned out to be someone else's file."""


def _open_directory(directory: str, path: str, allow_unsafe: bool) -> int:
    try:
        # The one name we resolve: the parent itself may be a symlink (/var/run).
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise EndpointError(f"cannot create a socket in {directory}: {exc.strerror}") from None
    try:
        reason = None if allow_unsafe else _unsafe_because(os.fstat(fd))
    except OSError as exc:
        os.close(fd)
        raise EndpointError(f"cannot create a socket in {directory}: {exc.strerror}") from None
    if reason is not None:
        os.close(fd)
        raise EndpointError(
            f"cannot listen on {path}: refusing the unsafe directory {directory}: {reason}; "
            "use a directory that only root or this process's user can change, or --allow-unsafe-directory"
        )
    return fd


def _make_private_directory(parent_fd: int, directory: str) -> tuple[str, int]:
    """A fresh directory in parent_fd, 0700, and a descriptor of it checked to be ours."""
    for _ in range(100):
        name = f".capsudo-{secrets.token_hex(6)}"
        try:
            os.mkdir(name, 0o700, dir_fd=parent_fd)
            break
        except FileExistsError:
            continue
    else:
        raise FileExistsError(errno.EEXIST, f"no free name for a staging directory in {directory}")
    # Between mkdir and open, a user who can write the parent may have put
    # another directory under that name: what we opened must be ours and private.
    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
    st = os.fstat(fd)
    if st.st_uid != os.geteuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        os.close(fd)
        raise _Replaced(f"the staging directory {os.path.join(directory, name)} was replaced by someone else's")
    return name, fd


def _chmod_socket(private_fd: int, mode: int) -> None:
    try:
        os.chmod("socket", mode, dir_fd=private_fd, follow_symlinks=False)
        return
    except (NotImplementedError, ValueError):
        # Python raises these where the C library cannot chmod without
        # following (older glibc, musl), and for a symlink. Our private
        # directory lets nobody else add an entry, so what is there now is
        # what chmod would reach: a socket, or we refuse.
        pass
    if not stat.S_ISSOCK(os.stat("socket", dir_fd=private_fd, follow_symlinks=False).st_mode):
        raise _Replaced("the socket in the staging directory was replaced by another kind of file")
    os.chmod("socket", mode, dir_fd=private_fd)


async def open_unix_listener(
    path: str,
    *,
    owner: Owner | None = None,
    mode: int = DEFAULT_MODE,
    backlog: int = 128,
    allow_unsafe_directory: bool = False,
    **channel_options,
) -> UnixListener:
    """A UnixListener at `path`, with `owner` and `mode` from its first instant.

    The directory of `path` must not let anyone but root and us replace its
    entries, unless allow_unsafe_directory. Every failure is an EndpointError.
    """
    path = os.path.abspath(path)
    if len(os.fsencode(path)) > _SUN_PATH_MAX:
        raise EndpointError(f"cannot listen on {path}: longer than the {_SUN_PATH_MAX} bytes a socket address holds")
    directory, name = os.path.split(path)
    # The socket before the directories' descriptors: those are closed again,
    # and must not leave a gap below the socket's number in the daemon's table.
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        parent_fd = _open_directory(directory, path, allow_unsafe_directory)
        try:
            _refuse_to_clobber(path)
            identity = _place_socket(sock, parent_fd, directory, name, owner, mode, backlog)
        finally:
            os.close(parent_fd)
    except BaseException:
        sock.close()
        raise
    return UnixListener(sock, path, identity=identity, **channel_options)


def _place_socket(
    sock: socket.socket, parent_fd: int, directory: str, name: str, owner: Owner | None, mode: int, backlog: int
) -> tuple[int, int]:
    """`sock` listening at `name` in parent_fd, given its owner and mode before it got there.

    Returns the (st_dev, st_ino) of its file; the caller closes the socket on failure.
    """
    path = os.path.join(directory, name)
    try:
        private, private_fd = _make_private_directory(parent_fd, directory)
    except OSError as exc:
        raise EndpointError(f"cannot create a socket in {directory}: {exc.strerror or exc}") from None
    except _Replaced as exc:
        raise EndpointError(f"cannot listen on {path}: {exc}") from None
    identity = None
    failure: OSError | _Replaced | None = None
    try:
        # Through the descriptor: the socket is made in the directory we
        # checked, whatever its name leads to by now. The alias is short, too,
        # so every path that fits in sun_path works.
        sock.bind(f"/proc/self/fd/{private_fd}/socket")
        if owner is not None:
            os.chown(
                "socket",
                -1 if owner.uid is None else owner.uid,
                -1 if owner.gid is None else owner.gid,
                dir_fd=private_fd,
                follow_symlinks=False,
            )
        _chmod_socket(private_fd, mode)
        sock.listen(backlog)
        st = os.stat("socket", dir_fd=private_fd, follow_symlinks=False)
        # The one step that names an entry of the parent: rename replaces
        # whatever is at `name` and never follows a symlink there.
        os.rename("socket", name, src_dir_fd=private_fd, dst_dir_fd=parent_fd)
        identity = (st.st_dev, st.st_ino)
    except (OSError, _Replaced) as exc:
        failure = exc
    cleanup_failure = _remove_private_directory(parent_fd, directory, private, private_fd)
    failure = failure or cleanup_failure
    if failure is not None:
        if identity is not None:
            _unlink_if_ours(parent_fd, name, identity)
        reason = (failure.strerror or failure) if isinstance(failure, OSError) else failure
        raise EndpointError(f"cannot listen on {path}: {reason}")
    return identity


def _remove_private_directory(parent_fd: int, directory: str, name: str, fd: int) -> OSError | _Replaced | None:
    """Empty the staging directory through its descriptor, then remove it; what went wrong, if anything."""
    failure = None
    try:
        os.unlink("socket", dir_fd=fd)  # still there if we failed before the rename
    except FileNotFoundError:
        pass
    except OSError as exc:
        failure = exc
    try:
        ours = os.fstat(fd)
        try:
            there = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        except FileNotFoundError:
            there = None
        if there is None or (there.st_dev, there.st_ino) != (ours.st_dev, ours.st_ino):
            # Swapped by someone who can write the parent: ours stays, empty, under
            # another name, and theirs is none of our business.
            swapped = f"the staging directory {os.path.join(directory, name)} was swapped by a user who can write it"
            return failure or _Replaced(swapped)
        # rmdir only takes a name. If it is swapped in between, what goes is an
        # empty directory in a parent that whoever swapped it can write anyway.
        os.rmdir(name, dir_fd=parent_fd)
    except OSError as exc:
        failure = failure or exc
    finally:
        os.close(fd)
    return failure


def _unlink_if_ours(parent_fd: int, name: str, identity: tuple[int, int]) -> None:
    try:
        st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        if (st.st_dev, st.st_ino) == identity:
            os.unlink(name, dir_fd=parent_fd)
    except OSError:
        pass  # not ours any more, or gone: nothing of ours to remove
