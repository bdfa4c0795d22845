"""Who the program runs as, and what the daemon tells it about who asked.

A RunAs declaration names a user, a group and supplementary groups (by
default the user's own, from the group database), a working directory and a
umask. It is resolved against the user and group databases at every session
(an account may change while the daemon runs) and once when the endpoint is
configured, so that a name that does not exist is refused at start.

Whatever runs, the daemon adds entries no client can set: CAPSUDO_UID,
CAPSUDO_GID and CAPSUDO_USER name the caller as the kernel does (its peer
credentials, as sudo's SUDO_UID and SUDO_USER do), CAPSUDO_ENDPOINT the
endpoint and CAPSUDO_SESSION the session's id. Over a channel that carries
no credentials (tcp://, tls://, vsock://, a multiplexer over ssh) the
daemon does not know a uid: the three caller entries are then absent, and
any a client sent are removed, so a program never reads a caller the
kernel did not vouch for.
"""

from __future__ import annotations

import grp
import os
import pwd
from collections.abc import Mapping
from dataclasses import dataclass

from ._policy_error import PolicyError

CALLER_ENTRIES = ("CAPSUDO_UID", "CAPSUDO_GID", "CAPSUDO_USER", "CAPSUDO_ENDPOINT", "CAPSUDO_SESSION")


@dataclass(frozen=True)
class RunAs:
    """`user`, `group`, `groups`, `directory`, `umask` of an endpoint; None everywhere: as the daemon runs.

    `user` and `group` are names or ids; `group` defaults to the user's
    primary group. `groups` None means the user's own supplementary groups
    from the group database, () none at all. `directory` None keeps the
    daemon's working directory; it is entered as the user, so the user must
    be allowed in. `umask` None keeps the daemon's.
    """

    user: str | int | None = None
    group: str | int | None = None
    groups: tuple[str | int, ...] | None = None
    directory: str | None = None
    umask: int | None = None

    def __post_init__(self) -> None:
        if self.umask is not None and not (isinstance(self.umask, int) and 0 <= self.umask <= 0o777):
            raise PolicyError(f"umask {self.umask!r} is not between 0 and 0777")
        if self.directory is not None and not os.path.isabs(self.directory):
            raise PolicyError(f"working directory {self.directory!r} is not an absolute path")
        if self.groups is not None and not isinstance(self.groups, tuple):
            object.__setattr__(self, "groups", tuple(self.groups))

    @property
    def changes_identity(self) -> bool:
        return self.user is not None or self.group is not None or self.groups is not None

    def resolve(self) -> Identity | None:
        """The ids to switch to, from the databases as they are now; None when nothing changes."""
        if not self.changes_identity:
            return None
        account = _account(self.user)
        gid = account.pw_gid if self.group is None else _group_id(self.group)
        if self.groups is None:
            groups = tuple(os.getgrouplist(account.pw_name, gid))
        else:
            groups = tuple(dict.fromkeys(_group_id(group) for group in self.groups))
        return Identity(account.pw_uid, gid, groups, account.pw_name, account.pw_dir, account.pw_shell,
                        named=self.user is not None)


@dataclass(frozen=True)
class Identity:
    """A RunAs resolved: the ids the child takes, and the account they belong to."""

    uid: int
    gid: int
    groups: tuple[int, ...]
    name: str
    home: str
    shell: str
    #: A user was declared (not only a group): the program gets that user's HOME, USER, LOGNAME, SHELL.
    named: bool = True

    def account_entries(self) -> dict[str, str]:
        if not self.named:
            return {}
        return {"HOME": self.home, "USER": self.name, "LOGNAME": self.name, "SHELL": self.shell or "/bin/sh"}


def _account(user: str | int | None) -> pwd.struct_passwd:
    try:
        if user is None:
            return pwd.getpwuid(os.getuid())
        if isinstance(user, int):
            return pwd.getpwuid(user)
        return pwd.getpwnam(user)
    except KeyError:
        raise PolicyError(f"no user {user!r} in the user database") from None


def _group_id(group: str | int) -> int:
    if isinstance(group, int):
        if group < 0:
            raise PolicyError(f"group id {group} is negative")
        return group
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise PolicyError(f"no group {group!r} in the group database") from None


def user_name(uid: int) -> str:
    """The login name of `uid`, or the number itself when it has none (as `id` shows it)."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def program_environment(
    environment: Mapping[str, str],
    pinned: Mapping[str, str],
    identity: Identity | None,
    *,
    caller,
    endpoint: str,
    session: str,
) -> dict[str, str]:
    """The environment the program gets: the decided one, the account's entries
    (unless the endpoint pins them), then the daemon's word on who asked."""
    result = dict(environment)
    if identity is not None:
        for key, value in identity.account_entries().items():
            if key not in pinned:
                result[key] = value
    for key in CALLER_ENTRIES:
        result.pop(key, None)
    if caller is not None:
        result["CAPSUDO_UID"] = str(caller.uid)
        result["CAPSUDO_GID"] = str(caller.gid)
        result["CAPSUDO_USER"] = user_name(caller.uid)
    result["CAPSUDO_ENDPOINT"] = endpoint
    result["CAPSUDO_SESSION"] = session
    return result
