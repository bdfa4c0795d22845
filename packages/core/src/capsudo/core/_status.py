"""A program's outcome as one exit status, the way shells report it."""

import os

SIGNAL_BASE = 128


def exit_status(returncode: int) -> int:
    """Popen-style returncode (negative for a signal) to a shell-style status."""
    return SIGNAL_BASE - returncode if returncode < 0 else returncode


def from_wait_status(wait_status: int) -> int:
    """os.waitpid()'s status word to a shell-style status."""
    if os.WIFSIGNALED(wait_status):
        return SIGNAL_BASE + os.WTERMSIG(wait_status)
    return os.WEXITSTATUS(wait_status)
