"""Owner (`user[:group]`) and mode (octal) of a listening socket, from the command line."""

from __future__ import annotations

import grp
import pwd
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Owner:
    """Who should own a socket file; None keeps that id unchanged."""

    uid: int | None
    gid: int | None


def parse_owner(text: str) -> Owner:
    """`user`, `user:group`, `:group`; names or numbers.

    A user given by name also brings that user's primary group, unless a
    group is named too. Raises ValueError with a one-line reason.
    """
    user, sep, group = text.partition(":")
    if not user and not group:
        raise ValueError(f"invalid owner {text!r}: expected user[:group]")
    if sep and not group:
        raise ValueError(f"invalid owner {text!r}: empty group after ':'")
    uid = gid = None
    if user:
        uid, primary_gid = _lookup_user(user)
        gid = primary_gid
    if group:
        gid = _lookup_group(group)
    return Owner(uid, gid)


def _lookup_user(name: str) -> tuple[int, int | None]:
    if name.isascii() and name.isdigit():
        uid = int(name)
        try:
            return uid, pwd.getpwuid(uid).pw_gid
        except KeyError:
            return uid, None  # a bare number needs no passwd entry
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise ValueError(f"unknown user {name!r}") from None
    return entry.pw_uid, entry.pw_gid


def _lookup_group(name: str) -> int:
    if name.isascii() and name.isdigit():
        return int(name)
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise ValueError(f"unknown group {name!r}") from None


DEFAULT_MODE = 0o770


def parse_mode(text: str) -> int:
    """An octal permission mode such as 0770 or 660, at most 07777."""
    if not text or len(text) > 5 or any(c not in "01234567" for c in text):
        raise ValueError(f"invalid mode {text!r}: expected an octal number from 0 to 07777, such as 0770")
    mode = int(text, 8)
    if mode > 0o7777:
        raise ValueError(f"invalid mode {text!r}: must be at most 07777")
    return mode
