"""Starting the program a session runs, with exactly the delegated descriptors.

The program gets its own session and process group (so a hang-up reaches it
and everything it started, and nothing of the daemon's terminal reaches it)
and no descriptor but stdin, stdout and stderr.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from contextlib import asynccontextmanager
from typing import AsyncIterator, Protocol

import trio

from capsudo.proto import Winsize

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

    def __init__(self, process: trio.Process) -> None:
        self._process = process
        self.pid = process.pid

    async def wait(self) -> int:
        return exit_status(await self._process.wait())

    def resize(self, winsize: Winsize) -> None:
        pass


@asynccontextmanager
async def open_plain_program(
    executable: str, argv: Sequence[str], env: Mapping[str, str], stdio: Sequence[int]
) -> AsyncIterator[PlainProgram]:
    try:
        process = await trio.lowlevel.open_process(
            list(argv),
            executable=executable,
            env=dict(env),
            stdin=stdio[0],
            stdout=stdio[1],
            stderr=stdio[2],
            close_fds=True,
            start_new_session=True,
            restore_signals=True,
        )
    except OSError as exc:
        raise SpawnError(exc.strerror or str(exc)) from None
    except RuntimeError as exc:
        # trio starts the process from a worker thread; under RLIMIT_NPROC
        # the thread itself may be what cannot be created.
        raise SpawnError(str(exc)) from None
    try:
        yield PlainProgram(process)
    finally:
        if process.returncode is None:
            # Leaving early (daemon shutting down, task cancelled): hang it up.
            signal_group(process.pid, signal.SIGKILL)
            with trio.CancelScope(shield=True):
                await process.wait()


def signal_group(pgid: int, signum: int) -> bool:
    """Signal a program's process group; False when nothing is left in it."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    return True
