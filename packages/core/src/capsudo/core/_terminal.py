"""The caller's terminal during an interactive session.

Raw mode for the session, and the original settings back on every way out:
a normal end, an error, the daemon dying, or SIGTERM/SIGHUP/SIGINT/SIGQUIT to
the client. Window-size changes are reported through a callback.
"""

from __future__ import annotations

import _signal as signal  # the C module: `signal` wraps it in enums, a few milliseconds of every start
import os
import termios
import tty
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ._fatal_signals import FATAL_SIGNALS, Interrupted, stop_on_signals  # noqa: F401  (named here too)


@contextmanager
def raw_mode(fd: int, on_continue: Callable[[], None] | None = None) -> Iterator[None]:
    """Raw mode on fd if it is a terminal; restores the exact settings after.

    A client stopped and continued (SIGSTOP, then `fg`) finds the terminal
    as its shell left it, cooked: raw mode is set again on SIGCONT, when the
    client is in the foreground (in the background, setting it would only
    stop the client again; the `fg` that follows sends another SIGCONT).
    on_continue is called then too (the window may have changed meanwhile).
    """
    try:
        saved = termios.tcgetattr(fd)
    except termios.error:
        saved = None
    if saved is None:
        yield
        return

    def continued(signum, frame) -> None:
        try:
            if os.tcgetpgrp(fd) == os.getpgrp():
                tty.setraw(fd, termios.TCSANOW)
        except (OSError, termios.error):
            pass  # the terminal is gone: nothing to set
        if on_continue is not None:
            on_continue()

    # TCSANOW both ways: keys typed ahead belong to the program (going raw)
    # or to the shell (coming back), and a restore must never wait on output.
    previous = signal.signal(signal.SIGCONT, continued)
    try:
        tty.setraw(fd, termios.TCSANOW)
        yield
    finally:
        signal.signal(signal.SIGCONT, previous)
        try:
            termios.tcsetattr(fd, termios.TCSANOW, saved)
        except termios.error:
            pass  # the terminal is gone (hung up): nothing left to restore


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
