"""Handing an authenticated connection to the chained command.

The client's socket becomes the command's standard input, in blocking mode
as a plain daemon expects. The command gets nothing else of ours: its output
goes to the front-end's standard error (so a chained capsudod's session
record lands in the same log), its environment is a safe PATH and the
session's id (CAPSUDO_SESSION_ID, which our capsudod serves the session
under and any other command may ignore), its
working directory is /, and it runs in a session of its own, so signals
aimed at the front-end's terminal do not reach it.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence

import trio

from capsudo.core import SAFE_PATH


class ChainError(Exception):
    """The command could not be started; the text says why."""


def output_descriptor() -> int:
    """Our standard error if it is open, else /dev/null (kept for the process's life)."""
    try:
        os.fstat(2)
        return 2
    except OSError:
        return os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)


async def start_chained(command: Sequence[str], client_fd: int, output_fd: int, *,
                        session_id: str | None = None) -> trio.Process:
    """Start `command` with `client_fd` as its stdin. The caller still closes its own copy.

    Blocking mode belongs to the open file, which the command shares: after
    a start it stays blocking; after a failure it is non-blocking again, so
    the event loop can still answer the client.
    """
    os.set_blocking(client_fd, True)
    try:
        return await trio.lowlevel.open_process(
            list(command),
            stdin=client_fd,
            stdout=output_fd,
            stderr=output_fd,
            env={"PATH": SAFE_PATH, **({"CAPSUDO_SESSION_ID": session_id} if session_id else {})},
            cwd="/",
            close_fds=True,
            start_new_session=True,
            restore_signals=True,
        )
    except OSError as exc:
        os.set_blocking(client_fd, False)
        raise ChainError(f"unable to start {command[0]}: {exc.strerror or exc}") from None
    except (RuntimeError, subprocess.SubprocessError) as exc:
        # trio starts the process from a worker thread, which may itself be
        # what cannot be created.
        os.set_blocking(client_fd, False)
        raise ChainError(f"unable to start {command[0]}: {exc}") from None
