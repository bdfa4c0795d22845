"""What the child does between fork and exec: cgroup, limits, ids, umask, working directory.

One hook for plain and pty spawns alike, called as root in the child, in
this order: join the session's cgroup (only root may move itself), set the
resource limits (soft and hard: raising a hard limit needs root too), hand
the terminal to the user (pty only), setgroups, setgid, setuid, umask, and
enter the working directory as the user. Any step that fails makes the
spawn fail: the program never runs with less taken away than declared.

The child cannot raise an exception the parent sees, so it writes the
failed step, in one line, to a pipe whose other end the parent reads.
Everything the child needs is computed here in the parent: after fork only
system calls remain.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Sequence
from contextlib import asynccontextmanager

import trio

from ._run_as import Identity
from ._spawn import SpawnError


class ChildSetup:
    def __init__(
        self,
        *,
        join_fds: Sequence[int] = (),
        resource_limits: Sequence[tuple[str, int, int]] = (),
        identity: Identity | None = None,
        umask: int | None = None,
        directory: str | None = None,
        terminal: bool = False,
    ) -> None:
        self._join_fds = tuple(join_fds)
        self._resource_limits = tuple(resource_limits)
        self._identity = identity
        self._umask = umask
        self._directory = directory
        self._terminal = terminal
        # The pipe only where there is a step to fail: most endpoints declare none.
        self._read_end = self._write_end = -1
        if not self.empty:
            self._read_end, self._write_end = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)

    @property
    def empty(self) -> bool:
        return not (self._join_fds or self._resource_limits or self._identity or self._umask is not None
                    or self._directory)

    def __call__(self) -> None:
        """In the child, before exec."""
        step = "cannot join the session's cgroup"
        try:
            for fd in self._join_fds:
                os.write(fd, b"0")
            for name, number, value in self._resource_limits:
                step = f"cannot set the {name} limit to {value}"
                resource.setrlimit(number, (value, value))
            identity = self._identity
            if identity is not None:
                if self._terminal:
                    step = "cannot give the terminal to the user"
                    os.fchown(0, identity.uid, -1)
                step = f"cannot switch to user {identity.name}"
                os.setgroups(identity.groups)
                os.setgid(identity.gid)
                os.setuid(identity.uid)
            if self._umask is not None:
                os.umask(self._umask)
            if self._directory is not None:
                step = f"cannot enter {self._directory}"
                os.chdir(self._directory)
        except (OSError, ValueError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            os.write(self._write_end, f"{step}: {why}".encode())
            raise

    def failure(self) -> str | None:
        """The step the child failed at, after a spawn failed; None when it did not fail here."""
        if self._read_end < 0:
            return None
        try:
            text = os.read(self._read_end, 4096)
        except (BlockingIOError, OSError):
            return None
        return text.decode(errors="replace") or None

    def close(self) -> None:
        for fd in (self._read_end, self._write_end):
            if fd >= 0:
                os.close(fd)
        self._read_end = self._write_end = -1


class PreparedChild:
    """A session's ChildSetup and the cgroup it joins (None without memory or tasks limits)."""

    def __init__(self, setup: ChildSetup, cgroup) -> None:
        self.setup = setup
        self.cgroup = cgroup

    @property
    def before_exec(self):
        # Nothing to do: no hook at all, so that the plain spawn keeps its vfork.
        return None if self.setup.empty else self.setup


@asynccontextmanager
async def prepared_child(policy, identity: Identity | None, session: str, *, terminal: bool):
    """The hook for a session's program, with its cgroup made; the cgroup is removed on the way out."""
    limits = policy.limits
    cgroup = None
    if limits.needs_cgroup:
        from ._cgroup import SessionCgroup

        cgroup = SessionCgroup(f"capsudo-{session}", limits.memory, limits.tasks)
    setup = ChildSetup(
        join_fds=cgroup.join_fds if cgroup is not None else (),
        resource_limits=limits.resource_limits(),
        identity=identity,
        umask=policy.run_as.umask,
        directory=policy.run_as.directory,
        terminal=terminal,
    )
    try:
        yield PreparedChild(setup, cgroup)
    except SpawnError:
        # The child's own word on which step failed, rather than Popen's.
        failure = setup.failure()
        if failure is None:
            raise
        raise SpawnError(failure) from None
    finally:
        setup.close()
        if cgroup is not None:
            with trio.CancelScope(shield=True):
                await cgroup.remove()
