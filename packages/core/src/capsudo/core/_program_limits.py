"""What the program may use: resource limits, a wall-clock timeout, and a cgroup's memory and tasks.

Resource limits are set in the child before exec, soft and hard alike, so
the program cannot raise them again. The timeout is the daemon's: SIGTERM
to the program's process group when it runs out, SIGKILL after the
hang-up grace. Memory and tasks are enforced by a cgroup made for each
session (see _cgroup). Sizes are bytes and durations seconds; the
configuration's "1G" and "5m" are turned into them before they get here.

A limit this system cannot enforce is refused by validate(), when the
endpoint is configured, in one line: never silently ignored.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Mapping
from dataclasses import dataclass, fields

from ._policy_error import PolicyError

Bytes = int
Seconds = float

# The configuration's names of the resource limits, and the fields that hold them.
RESOURCE_NAMES = {
    "nofile": ("nofile", resource.RLIMIT_NOFILE),
    "nproc": ("nproc", resource.RLIMIT_NPROC),
    "cpu": ("cpu", resource.RLIMIT_CPU),
    "as": ("address_space", resource.RLIMIT_AS),
    "core": ("core", resource.RLIMIT_CORE),
    "fsize": ("fsize", resource.RLIMIT_FSIZE),
    "data": ("data", resource.RLIMIT_DATA),
    "stack": ("stack", resource.RLIMIT_STACK),
    "memlock": ("memlock", resource.RLIMIT_MEMLOCK),
}
CGROUP_NAMES = ("memory", "tasks")


@dataclass(frozen=True)
class ProgramLimits:
    """Per endpoint limits on the program; None: no limit of that kind (the daemon's own)."""

    nofile: int | None = None  # open descriptors
    nproc: int | None = None  # processes of the program's user, all sessions together
    cpu: int | None = None  # seconds of CPU time (SIGXCPU, then SIGKILL)
    address_space: Bytes | None = None  # "as": virtual memory
    core: Bytes | None = None
    fsize: Bytes | None = None  # the largest file the program may write
    data: Bytes | None = None
    stack: Bytes | None = None
    memlock: Bytes | None = None
    timeout: Seconds | None = None  # wall-clock time, from the start
    memory: Bytes | None = None  # the session's cgroup: memory (and swap) in all
    tasks: int | None = None  # the session's cgroup: processes and threads at once

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if value is None:
                continue
            name = _config_name(item.name)
            if item.name == "timeout":
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                    raise PolicyError(f"timeout {value!r} is not a positive number of seconds")
            elif isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise PolicyError(f"limit {name} {value!r} is not a whole number of 0 or more")
        if self.tasks == 0:
            raise PolicyError("limit tasks 0 would not even let the program start")

    @classmethod
    def from_mapping(cls, limits: Mapping[str, object], timeout: Seconds | None = None) -> ProgramLimits:
        """From the configuration's names (`nofile`, `as`, `memory`, …); an unknown name is refused."""
        known = {name: field for name, (field, _) in RESOURCE_NAMES.items()} | {n: n for n in CGROUP_NAMES}
        values = {}
        for name, value in limits.items():
            if name not in known:
                raise PolicyError(f"unknown limit {name!r} (known: {', '.join(known)})")
            values[known[name]] = value
        return cls(timeout=timeout, **values)

    def resource_limits(self) -> list[tuple[str, int, int]]:
        """(name, RLIMIT_*, value) of each resource limit set."""
        result = []
        for name, (field, number) in RESOURCE_NAMES.items():
            value = getattr(self, field)
            if value is not None:
                result.append((name, number, value))
        return result

    @property
    def needs_cgroup(self) -> bool:
        return self.memory is not None or self.tasks is not None

    def validate(self, program_uid: int) -> None:
        """Refuse, in one line, any limit this system would not enforce for a program run as `program_uid`."""
        privileged = os.geteuid() == 0
        for name, number, value in self.resource_limits():
            _soft, hard = resource.getrlimit(number)
            if not privileged and hard != resource.RLIM_INFINITY and value > hard:
                raise PolicyError(f"limit {name} {value} is above this daemon's own hard limit {hard}, "
                                  f"which only root may raise")
        if self.nofile is not None:
            ceiling = _nr_open()
            if ceiling is not None and self.nofile > ceiling:
                raise PolicyError(f"limit nofile {self.nofile} is above the system's fs.nr_open {ceiling}")
        if self.nproc is not None and program_uid == 0:
            # The kernel does not count processes against the limit for root.
            raise PolicyError("limit nproc is not enforced for a program run as root: declare another user")
        if self.needs_cgroup:
            from ._cgroup import check_cgroup_limits

            check_cgroup_limits(self.memory, self.tasks)


def _config_name(field: str) -> str:
    return "as" if field == "address_space" else field


def _nr_open() -> int | None:
    try:
        with open("/proc/sys/fs/nr_open") as file:
            return int(file.read())
    except (OSError, ValueError):
        return None


def format_seconds(seconds: float) -> str:
    return f"{seconds:g}s"


def format_bytes(size: int) -> str:
    for unit, scale in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if size >= scale and size % scale == 0:
            return f"{size // scale}{unit}"
    return f"{size} bytes"
