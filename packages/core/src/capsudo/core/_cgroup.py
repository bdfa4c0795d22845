"""A cgroup for each session: memory and tasks limits on the program and all it starts.

The group is a child of the daemon's own group, named after the session,
made with its limits before the program exists; the child joins it between
fork and exec (it writes 0 to the group's cgroup.procs, opened here), so
the program never runs a single instruction outside it. When the session
ends whatever is left in the group is killed and the group removed.

cgroup v2 is used where the daemon's own group enables the controller for
its children (cgroup.subtree_control); otherwise the v1 `memory` and
`pids` hierarchies of a hybrid system, where each controller has its own
tree and the group is made once in each. The memory limit covers swap too
where the system counts it (memory.memsw.*, memory.swap.max), so that a
program cannot go past it by swapping.
"""

from __future__ import annotations

import errno
import os
import signal
from dataclasses import dataclass

import trio

from ._policy_error import PolicyError

# How long removal waits for killed tasks to leave the group.
REMOVAL_PATIENCE = 2.0
V1_CONTROLLERS = {"memory": "memory", "tasks": "pids"}


@dataclass(frozen=True)
class Place:
    """Where a controller's session groups go: the daemon's own group in that hierarchy."""

    directory: str
    version: int


def _mounts() -> list[tuple[str, str, str, set[str]]]:
    """(mount point, root inside the hierarchy, file system type, super options) of cgroup mounts."""
    result = []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            before, _, after = line.partition(" - ")
            parts, tail = before.split(), after.split()
            if len(parts) < 5 or len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
                continue
            result.append((parts[4], parts[3], tail[0], set(tail[2].split(","))))
    return result


def _own_groups() -> dict[str, str]:
    """The daemon's group per controller ("" for cgroup v2), from /proc/self/cgroup."""
    result = {}
    with open("/proc/self/cgroup") as own:
        for line in own:
            number, controllers, path = line.rstrip("\n").split(":", 2)
            if number == "0" and not controllers:
                result[""] = path
            for controller in controllers.split(","):
                if controller:
                    result[controller] = path
    return result


def _inside(mount_point: str, mount_root: str, path: str) -> str | None:
    relative = os.path.relpath(path, mount_root)
    if relative.startswith(".."):
        return None  # the daemon's group is not under what this mount shows
    return os.path.normpath(os.path.join(mount_point, relative))


def find_place(limit: str) -> Place:
    """Where session groups for `limit` ("memory" or "tasks") are made; PolicyError when nowhere."""
    v2_name = "memory" if limit == "memory" else "pids"
    v1_name = V1_CONTROLLERS[limit]
    try:
        mounts, own = _mounts(), _own_groups()
    except OSError as exc:
        raise PolicyError(f"limit {limit}: cannot read this process's cgroups: {exc.strerror}") from None
    for mount_point, root, kind, options in mounts:
        if kind == "cgroup2" and "" in own:
            directory = _inside(mount_point, root, own[""])
            if directory is not None and v2_name in _words(os.path.join(directory, "cgroup.subtree_control")):
                return Place(directory, 2)
    for mount_point, root, kind, options in mounts:
        if kind == "cgroup" and v1_name in options and v1_name in own:
            directory = _inside(mount_point, root, own[v1_name])
            if directory is not None and os.path.isdir(directory):
                return Place(directory, 1)
    raise PolicyError(
        f"limit {limit} cannot be enforced here: no cgroup v2 group of this daemon enables "
        f"{v2_name} for its children, and no cgroup v1 {v1_name} hierarchy holds it"
    )


def _words(path: str) -> set[str]:
    try:
        with open(path) as file:
            return set(file.read().split())
    except OSError:
        return set()


def _write(path: str, value: str) -> None:
    with open(path, "w") as file:
        file.write(value)


class SessionCgroup:
    """The group (one per hierarchy on v1) of one session, with its limits set."""

    def __init__(self, name: str, memory: int | None, tasks: int | None) -> None:
        self.directories: list[str] = []
        self.join_fds: list[int] = []
        self._oom_files: list[tuple[str, str]] = []
        try:
            places: dict[str, list[str]] = {}
            for limit in ("memory", "tasks"):
                if (memory if limit == "memory" else tasks) is not None:
                    place = find_place(limit)
                    places.setdefault(os.path.join(place.directory, name), []).append(f"{limit}:{place.version}")
            for directory, limits in places.items():
                os.mkdir(directory, 0o755)
                self.directories.append(directory)
                for item in limits:
                    self._set(directory, item, memory, tasks)
                self.join_fds.append(os.open(os.path.join(directory, "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC))
        except BaseException:
            self.close_fds()
            self._remove_now()
            raise

    def _set(self, directory: str, item: str, memory: int | None, tasks: int | None) -> None:
        limit, version = item.split(":")
        if limit == "tasks":
            _write(os.path.join(directory, "pids.max"), str(tasks))
        elif version == "2":
            _write(os.path.join(directory, "memory.max"), str(memory))
            if os.path.exists(os.path.join(directory, "memory.swap.max")):
                _write(os.path.join(directory, "memory.swap.max"), "0")
            self._oom_files.append((os.path.join(directory, "memory.events"), "oom_kill"))
        else:
            _write(os.path.join(directory, "memory.limit_in_bytes"), str(memory))
            if os.path.exists(os.path.join(directory, "memory.memsw.limit_in_bytes")):
                _write(os.path.join(directory, "memory.memsw.limit_in_bytes"), str(memory))
            self._oom_files.append((os.path.join(directory, "memory.oom_control"), "oom_kill"))

    def oom_killed(self) -> bool:
        """Whether the kernel killed a task of this group for going past its memory limit."""
        for path, key in self._oom_files:
            try:
                with open(path) as file:
                    for line in file:
                        name, _, count = line.partition(" ")
                        if name == key and int(count) > 0:
                            return True
            except (OSError, ValueError):
                continue
        return False

    def close_fds(self) -> None:
        for fd in self.join_fds:
            os.close(fd)
        self.join_fds = []

    async def remove(self) -> bool:
        """Kill what is left in the group (the program's leftovers) and remove it; False if it stays.

        Never raises: the session it belongs to has ended, and its status
        must still reach the client.
        """
        self.close_fds()
        deadline = trio.current_time() + REMOVAL_PATIENCE
        while self.directories:
            for directory in list(self.directories):
                _kill_all(directory)
                try:
                    os.rmdir(directory)
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    if exc.errno != errno.EBUSY or trio.current_time() > deadline:
                        return False
                    continue
                self.directories.remove(directory)
            if self.directories:
                await trio.sleep(0.01)
        return True

    def _remove_now(self) -> None:
        for directory in reversed(self.directories):
            try:
                os.rmdir(directory)
            except OSError:
                pass
        self.directories = []


def _kill_all(directory: str) -> None:
    kill_file = os.path.join(directory, "cgroup.kill")
    if os.path.exists(kill_file):
        try:
            _write(kill_file, "1")
            return
        except OSError:
            pass
    try:
        with open(os.path.join(directory, "cgroup.procs")) as procs:
            pids = [int(line) for line in procs if line.strip()]
    except (OSError, ValueError):
        return
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def check_cgroup_limits(memory: int | None, tasks: int | None) -> None:
    """Make and remove a group with these limits, as a session would; PolicyError (one line) if that fails."""
    name = f"capsudo-check-{os.getpid()}"
    try:
        group = SessionCgroup(name, memory, tasks)
    except OSError as exc:
        which = " and ".join(limit for limit, value in (("memory", memory), ("tasks", tasks)) if value is not None)
        raise PolicyError(f"limit {which} cannot be enforced here: cannot make a cgroup: "
                          f"{exc.strerror or exc}") from None
    group.close_fds()
    group._remove_now()
