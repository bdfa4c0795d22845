"""Starting the program a session runs, with exactly the delegated descriptors.

The program gets its own session and process group (so a hang-up reaches it
and everything it started, and nothing of the daemon's terminal reaches it)
and no descriptor but stdin, stdout and stderr.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import AsyncIterator, Protocol

import trio

from capsudo.proto import Winsize

from ._label import exec_label
from ._status import exit_status


class SpawnError(Exception):
    """The program could not be started; the text says why."""


class RunningProgram(Protocol):
    pid: int

    async def wait(self) -> int:
        """The shell-style exit status, once the program ended (and, for a
        pty, once what it wrote has been relayed)."""

    def resize(self, winsize: Winsize) -> None:
        """Apply a new terminal size (no effect without a terminal)."""


class PlainProgram:
    """A program writing straight into the client's own descriptors."""

    def __init__(self, process: subprocess.Popen, pidfd: int) -> None:
        self._process = process
        self.pid = process.pid
        # Its end is awaited as readiness of a pidfd: no thread, no SIGCHLD.
        self._pidfd = pidfd

    @property
    def ended(self) -> bool:
        return self._process.returncode is not None

    async def wait(self) -> int:
        if self._process.returncode is None:
            await trio.lowlevel.wait_readable(self._pidfd)
        return exit_status(self._process.wait())

    def resize(self, winsize: Winsize) -> None:
        pass

    def close(self) -> None:
        if self._pidfd != -1:
            trio.lowlevel.notify_closing(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1


@asynccontextmanager
async def open_plain_program(
    executable: str,
    argv: Sequence[str],
    env: Mapping[str, str],
    stdio: Sequence[int],
    *,
    label: str | None = None,
    before_exec: Callable[[], None] | None = None,
) -> AsyncIterator[PlainProgram]:
    """Start the program on the client's descriptors; with `label`, under the caller's security label.

    `before_exec` runs in the child just before exec (ids, limits, cgroup);
    without it the start takes the faster vfork path.
    """
    await trio.lowlevel.checkpoint_if_cancelled()
    try:
        # On the loop's own thread: with vfork the start costs a quarter of a
        # millisecond, less than handing it to a worker thread and back.
        with exec_label(label):
            process = subprocess.Popen(
                list(argv),
                executable=executable,
                env=dict(env),
                stdin=stdio[0],
                stdout=stdio[1],
                stderr=stdio[2],
                close_fds=True,
                start_new_session=True,
                restore_signals=True,
                preexec_fn=before_exec,
            )
    except OSError as exc:
        raise SpawnError(exc.strerror or str(exc)) from None
    except subprocess.SubprocessError:
        raise SpawnError("cannot prepare the program to run") from None
    program = PlainProgram(process, pidfd_or_kill(process.pid, reap=process.wait))
    try:
        yield program
    finally:
        if not program.ended:
            # Leaving early (daemon shutting down, task cancelled): hang it up.
            signal_group(program.pid, signal.SIGKILL)
            with trio.CancelScope(shield=True):
                await program.wait()
        program.close()


def pidfd_or_kill(pid: int, reap: Callable[[], object]) -> int:
    """A pidfd for a program just started.

    Without one (out of descriptors) nobody could supervise the program, so
    it must not run: it is killed, reaped by `reap`, and SpawnError raised.
    """
    try:
        return os.pidfd_open(pid)
    except OSError as exc:
        signal_group(pid, signal.SIGKILL)
        reap()
        raise SpawnError(f"cannot watch the program: {exc.strerror}") from None


def signal_group(pgid: int, signum: int) -> bool:
    """Signal a program's process group; False when nothing is left in it."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    return True
