"""Why a connection failed, in a line a person can act on.

A Unix endpoint fails for reasons the errno alone does not tell apart well
(ENOENT for a missing directory or a missing socket; EACCES for the socket
or a directory above it), so the path is looked at. Only on a failure: the
ordinary connect costs nothing more.
"""

from __future__ import annotations

import errno
import os
import stat


def errno_reason(exc: OSError) -> str:
    """The errno's text in lower case, or the exception's own words; no tuples."""
    code = exc.errno
    cause = exc.__cause__
    if code is None and isinstance(cause, BaseExceptionGroup):
        for inner in cause.exceptions:
            if isinstance(inner, OSError) and inner.errno is not None:
                code = inner.errno
                break
    if code is None and isinstance(cause, OSError):
        code = cause.errno
    if code is not None:
        text = os.strerror(code)
        return text[:1].lower() + text[1:]
    return str(exc)


def unix_connect_failure(path: str, exc: OSError) -> str:
    """One line for a failed connect() to the Unix socket at `path`."""
    if exc.errno == errno.ENOENT:
        return f"no endpoint at {path}: is its daemon running?"
    if exc.errno == errno.ECONNREFUSED:
        try:
            is_socket = stat.S_ISSOCK(os.stat(path).st_mode)
        except OSError:
            is_socket = True
        if not is_socket:
            return f"cannot connect to {path}: it is not a socket"
        return f"cannot connect to {path}: a socket nobody listens on (left by a daemon that has stopped?)"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"cannot connect to {path}: permission denied ({_permission_detail(path)})"
    if exc.errno == errno.ENOTDIR:
        return f"no endpoint at {path}: a part of the path is not a directory"
    return f"cannot connect to {path}: {errno_reason(exc)}"


def _permission_detail(path: str) -> str:
    """Whose socket it is, and whether the caller could be let in by group."""
    blocked = _blocking_directory(path)
    if blocked is not None:
        directory, info = blocked
        return f"the directory {directory} is {_owner_text(info)}, mode {stat.S_IMODE(info.st_mode):o}"
    try:
        info = os.stat(path)
    except OSError as exc:
        return errno_reason(exc)
    group_name = _group_name(info.st_gid)
    member = info.st_gid == os.getegid() or info.st_gid in os.getgroups()
    membership = "you are in that group" if member else f"you are not in group {group_name}"
    return f"the socket is {_owner_text(info)}, mode {stat.S_IMODE(info.st_mode):o}; {membership}"


def _blocking_directory(path: str):
    """The first directory above the socket that the caller may not search, and its stat."""
    directory = os.path.dirname(os.path.abspath(path))
    parts = []
    while True:
        parts.append(directory)
        parent = os.path.dirname(directory)
        if parent == directory:
            break
        directory = parent
    for directory in reversed(parts):
        if not os.access(directory, os.X_OK, effective_ids=True):
            try:
                return directory, os.stat(directory)
            except OSError:
                return None
    return None


def _owner_text(info: os.stat_result) -> str:
    return f"owned by {_user_name(info.st_uid)}:{_group_name(info.st_gid)}"


def _user_name(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group_name(gid: int) -> str:
    import grp

    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)
