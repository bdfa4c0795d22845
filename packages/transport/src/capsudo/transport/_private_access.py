"""How to reach someone else's descriptor without touching its shared flags: the choice, without trio.

O_NONBLOCK lives on the open file description, which a client's stdio often
shares with its shell; setting it would make the next program that uses the
terminal fail with EAGAIN. So each descriptor gets a descriptor of its own
(`_fdstream` explains each way). This module makes that choice and that
descriptor, so that both drivers of the multiplexed channel (trio's views
and the one-shot client's loop) follow one rule.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat

# Character devices that never block and whose reopening has no side effect.
_MEMORY_DEVICE_MAJOR = 1
_MEMORY_DEVICE_MINORS = {3, 5, 7, 8, 9}  # null, zero, full, random, urandom
# /dev/ptmx: reopening a pty master would allocate a brand new pty.
_PTMX = (5, 2)

#: A regular file or memory device: plain I/O, which never waits for a peer.
PLAIN = "plain"
#: A stream socket: MSG_DONTWAIT on every call.
SOCKET = "socket"
#: A FIFO or terminal of our own, reopened non-blocking on a description of its own.
REOPENED = "reopened"
#: Anything else: blocking I/O, off the loop where the driver can.
BLOCKING = "thread"


def _access_allows(flags: int, read: bool, write: bool) -> bool:
    if flags & os.O_PATH:
        # Names a file without any right to it: its access bits read as
        # O_RDONLY, but reopening it would open the file with our privilege.
        return False
    mode = flags & os.O_ACCMODE
    if read and mode == os.O_WRONLY:
        return False
    if write and mode == os.O_RDONLY:
        return False
    return True


def _reopen_flags(read: bool, write: bool) -> int:
    mode = os.O_RDWR if read and write else os.O_RDONLY if read else os.O_WRONLY
    return mode | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def _same_object(fd: int, st: os.stat_result) -> bool:
    other = os.fstat(fd)
    return (other.st_dev, other.st_ino, other.st_rdev) == (st.st_dev, st.st_ino, st.st_rdev)


def private_access(fd: int, *, read: bool = False, write: bool = False, own_descriptors: bool = False) -> tuple[str, int]:
    """(how, a descriptor of ours) for reading, writing or both through `fd`.

    The descriptor returned is a duplicate or a new description, the
    caller's to close. Never changes the flags of `fd`'s description, and
    never asks for access `fd` does not have. Only with `own_descriptors`
    (the descriptor is this process's own, not one a peer lent it) is a FIFO
    or terminal reopened by name: that open() runs with our privilege, and a
    privileged proxy relaying a client's descriptors would grant that client
    more than it holds.
    """
    if not (read or write):
        raise ValueError("a view is for reading, writing or both")
    st = os.fstat(fd)
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    mode = st.st_mode
    if stat.S_ISREG(mode) or stat.S_ISBLK(mode):
        return PLAIN, os.dup(fd)
    if stat.S_ISSOCK(mode):
        return SOCKET, os.dup(fd)
    if stat.S_ISCHR(mode):
        device = (os.major(st.st_rdev), os.minor(st.st_rdev))
        if device[0] == _MEMORY_DEVICE_MAJOR and device[1] in _MEMORY_DEVICE_MINORS:
            return PLAIN, os.dup(fd)
        reopenable = device != _PTMX and os.isatty(fd)
    else:
        reopenable = stat.S_ISFIFO(mode)
    if own_descriptors and reopenable and _access_allows(flags, read, write):
        try:
            new_fd = os.open(f"/proc/self/fd/{fd}", _reopen_flags(read, write))
        except OSError as exc:
            # EACCES (someone else's pipe), ENXIO (a FIFO with no reader left),
            # ENOENT (no /proc): fall back to blocking I/O.
            if exc.errno not in (errno.EACCES, errno.EPERM, errno.ENXIO, errno.ENOENT, errno.ENODEV, errno.EROFS):
                raise
        else:
            if _same_object(new_fd, st):
                return REOPENED, new_fd
            os.close(new_fd)
    return BLOCKING, os.dup(fd)
