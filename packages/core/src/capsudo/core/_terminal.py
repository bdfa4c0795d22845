"""The caller's terminal during an interactive session.

Raw mode for the session, and the original settings back on every way out:
a normal end, an error, the daemon dying, or SIGTERM/SIGHUP/SIGINT/SIGQUIT to
the client. Window-size changes are reported through a callback.
"""

from __future__ import annotations

import os
import signal
import termios
import tty
from collections.abc import Callable, Iterator
from contextlib import contextmanager

FATAL_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGQUIT)


class Interrupted(BaseException):
    """A signal asked the client to stop; carries the signal number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _interrupt(signum, frame) -> None:
    raise Interrupted(signum)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn fatal signals into Interrupted, so `finally` blocks run."""
    previous = {signum: signal.signal(signum, _interrupt) for signum in FATAL_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextmanager
def raw_mode(fd: int) -> Iterator[None]:
    """Raw mode on fd if it is a terminal; restores the exact settings after."""
    try:
        saved = termios.tcgetattr(fd)
    except termios.error:
        yield
        return
    try:
        tty.setraw(fd, termios.TCSAFLUSH)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSAFLUSH, saved)


@contextmanager
def on_window_change(callback: Callable[[], None]) -> Iterator[None]:
    previous = signal.signal(signal.SIGWINCH, lambda signum, frame: callback())
    try:
        yield
    finally:
        signal.signal(signal.SIGWINCH, previous)


def controlling_terminal_available() -> bool:
    try:
        os.close(os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY))
    except OSError:
        return False
    return True
