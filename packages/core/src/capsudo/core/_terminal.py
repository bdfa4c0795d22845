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


# What a full-screen program may have turned on and, gone with its daemon,
# can no longer turn off: the alternate screen, a hidden cursor, mouse
# reporting (press, drag, any motion, SGR and urxvt encodings) and
# bracketed paste. Turned off as a terminal multiplexer does when a pane dies.
PROGRAM_MODES_OFF = b"\x1b[?1049l\x1b[?25h\x1b[?1000l\x1b[?1002l\x1b[?1003l\x1b[?1006l\x1b[?1015l\x1b[?2004l"


@contextmanager
def raw_mode(fd: int, on_continue: Callable[[], None] | None = None) -> Iterator[None]:
    """Raw mode on fd if it is a terminal; restores the exact settings after.

    A client stopped and continued (SIGSTOP, then `fg`) finds the terminal
    as its shell left it, cooked: raw mode is set again on SIGCONT, when the
    client is in the foreground (in the background, setting it would only
    stop the client again; the `fg` that follows sends another SIGCONT).
    on_continue is called then too (the window may have changed meanwhile).

    SIGTSTP (the daemon's word that the program stopped for a ^Z) puts the
    saved settings back and stops the client, so that its shell gets the
    terminal as it was; on continuing, as above.
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

    def stop_for_the_program(signum, frame) -> None:
        try:
            termios.tcsetattr(fd, termios.TCSANOW, saved)
        except termios.error:
            pass
        # The default action stops us here; without a shell doing job control
        # (an orphaned process group) the kernel discards it and we go on at once.
        signal.signal(signal.SIGTSTP, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTSTP)
        signal.signal(signal.SIGTSTP, stop_for_the_program)
        continued(signum, frame)

    # TCSANOW both ways: keys typed ahead belong to the program (going raw)
    # or to the shell (coming back), and a restore must never wait on output.
    previous = signal.signal(signal.SIGCONT, continued)
    previous_stop = signal.signal(signal.SIGTSTP, stop_for_the_program)
    try:
        tty.setraw(fd, termios.TCSANOW)
        yield
    finally:
        signal.signal(signal.SIGTSTP, previous_stop)
        signal.signal(signal.SIGCONT, previous)
        try:
            termios.tcsetattr(fd, termios.TCSANOW, saved)
        except termios.error:
            pass  # the terminal is gone (hung up): nothing left to restore


def leave_program_modes(fd: int) -> None:
    """After an interactive session that ended without its status: give the
    user's terminal its ordinary screen, cursor and input back. Only to a terminal."""
    try:
        if os.isatty(fd):
            os.write(fd, PROGRAM_MODES_OFF)
    except OSError:
        pass  # the terminal is gone too


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
