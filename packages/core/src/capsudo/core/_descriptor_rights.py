"""What a delegated descriptor must carry: the right its place in stdio needs.

A client delegates stdin, stdout and stderr; whatever holds them on the
daemon's side uses them with exactly the access the client gave, nothing
more. Two kinds of descriptor would give more. An O_PATH descriptor names a
file without any right to read or write it, yet opening it again by name
(/proc/self/fd/N, /dev/stdin) is an open() with the opener's privilege: a
root-only FIFO, read and written on behalf of anyone. A descriptor opened for
the other direction (stdin write-only) invites the same reopening. Both are
refused at the handshake, before anything uses them, by every daemon-side
reader of a request (capsudod, capsudo-proxy).

The descriptors a multiplexed channel delivers are socketpairs the daemon
made, open for reading and writing: they always pass.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Sequence

STDIO_NAMES = ("stdin", "stdout", "stderr")


def descriptor_fault(fds: Sequence[int]) -> str | None:
    """Why these stdin, stdout and stderr may not be used; None when they may.

    Looks at the access mode each descriptor actually has (F_GETFL), not at
    the file it names: the file's permissions are the daemon's to pass, the
    descriptor's mode is what the client holds.
    """
    for position, fd in enumerate(fds):
        name = STDIO_NAMES[position]
        try:
            flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        except OSError as exc:
            return f"{name} cannot be inspected: {exc.strerror}"
        if flags & os.O_PATH:
            return f"{name} is an O_PATH descriptor, which carries no right to read or write"
        access = flags & os.O_ACCMODE
        if position == 0 and access not in (os.O_RDONLY, os.O_RDWR):
            return f"{name} is not open for reading"
        if position > 0 and access not in (os.O_WRONLY, os.O_RDWR):
            return f"{name} is not open for writing"
    return None
