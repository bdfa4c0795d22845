"""Attenuation: what the daemon runs, given what it pins and what a client asks.

The daemon's pins always win. A pinned program is a prefix the client can
only extend (or, with `fixed`, not touch at all); the environment starts
empty, and a daemon entry beats a client entry of the same name.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ._policy_error import PolicyError
from ._program_limits import ProgramLimits
from ._run_as import RunAs

# Where programs are looked up when the program's environment has no PATH:
# system directories only, never the current directory.
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

DEFAULT_PROGRAM = ("sh",)


@dataclass(frozen=True)
class Policy:
    """What an endpoint allows: `capsudod [-f] [-E] [-e K=V]... [program [args...]]`."""

    program: tuple[str, ...] = ()
    fixed_arguments: bool = False
    fixed_environment: bool = False
    environment: Mapping[str, str] = field(default_factory=dict)
    #: Who the program runs as, where and with which umask (default: as the daemon).
    run_as: RunAs = RunAs()
    #: What the program may use (default: no limit beyond the daemon's own).
    limits: ProgramLimits = ProgramLimits()
    #: Refuse a request whose arguments or environment entries the pins would drop, rather than run without them.
    refuse_dropped: bool = False

    def validate(self) -> None:
        """Refuse, with a PolicyError of one line, what this system cannot give: run this when
        the endpoint is configured, so that it is refused at start rather than at each session."""
        identity = self.run_as.resolve()
        self.limits.validate(identity.uid if identity is not None else os.getuid())
        if self.run_as.directory is not None and not os.path.isdir(self.run_as.directory):
            raise PolicyError(f"working directory {self.run_as.directory!r} does not exist")

    def unpinned_environment_warning(self) -> str | None:
        """A line for the operator when the program is pinned but its environment is not."""
        if not self.program or self.fixed_environment:
            return None
        # With the program pinned, the environment is the way left to change what it does.
        return (
            "the program is pinned but its environment is not: a client can set LD_PRELOAD, PATH "
            "or any other entry for it; add -E to pin the environment too"
        )


def environment_from_entries(entries: Iterable[str]) -> dict[str, str]:
    """KEY=VALUE entries to a mapping; a later entry replaces an earlier one."""
    result: dict[str, str] = {}
    for entry in entries:
        key, _, value = entry.partition("=")
        result[key] = value
    return result


def attenuate(policy: Policy, argv: Iterable[str], env_entries: Iterable[str]) -> tuple[list[str], dict[str, str]]:
    """The argv and environment to run, from the policy and a client's request."""
    requested = [] if policy.fixed_arguments else list(argv)
    command = list(policy.program) + requested or list(DEFAULT_PROGRAM)
    environment = {} if policy.fixed_environment else environment_from_entries(env_entries)
    environment.update(policy.environment)
    return command, environment


#: Entries every client sends unasked (capsudo's FORWARDED_VARIABLES): dropping them is no news to anyone.
_SENT_UNASKED = frozenset({"TERM", "LANG", "LC_ALL", "LC_CTYPE", "LC_MESSAGES", "COLORTERM"})


@dataclass(frozen=True, slots=True)
class Dropped:
    """What of a client's request the pins leave out: its arguments (-f), its entries' names (-E or a pin of its own)."""

    argv: tuple[str, ...] = ()
    env_names: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.argv or self.env_names)

    def __str__(self) -> str:
        parts = []
        if self.argv:
            parts.append("arguments (" + " ".join(repr(arg) for arg in self.argv) + ")")
        if self.env_names:
            parts.append("environment entries (" + ", ".join(self.env_names) + ")")
        return " and ".join(parts)


def dropped(policy: Policy, argv: Iterable[str], env_entries: Iterable[str]) -> Dropped:
    """What `attenuate` leaves out of the request, save the entries a client sends unasked."""
    asked = environment_from_entries(env_entries)
    names = [name for name, value in asked.items() if name not in _SENT_UNASKED
             and (policy.fixed_environment or policy.environment.get(name, value) != value)]
    return Dropped(tuple(argv) if policy.fixed_arguments else (), tuple(names))


class ProgramNotFound(Exception):
    pass


def resolve_program(name: str, environment: Mapping[str, str]) -> str:
    """The file to execute: a name with a slash as it is, else the first
    executable match on the program's own PATH (SAFE_PATH when it has none).
    """
    if "/" in name:
        return name
    search = environment.get("PATH") or SAFE_PATH
    for directory in search.split(os.pathsep):
        if not directory:
            continue  # an empty entry would mean the daemon's working directory
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise ProgramNotFound("command not found")
