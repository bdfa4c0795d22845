"""Asking the person at the terminal for a password, as sudo does.

The prompt and the answer go through /dev/tty, never stdin or stdout, which
may be redirected or belong to the program. Echo goes off before the prompt
is shown, in line mode with CR mapped to NL, so Enter ends the line whatever
state the terminal was left in, and neither CR nor LF is kept. The
terminal's own settings come back on every way out: Enter, Ctrl-D, Ctrl-C,
or a signal. Standard library only: this runs inside the one-shot client.
"""

from __future__ import annotations

import os
import termios

from ._client_request import ClientError
from ._fatal_signals import stop_on_signals

TERMINAL = "/dev/tty"
# Linux keeps at most 4095 bytes of a line; anything longer is not typed.
MAX_LINE = 64 * 1024


def ask_secret(prompt: str) -> bytes:
    """The line typed at the controlling terminal, without its line end.

    Raises ClientError when there is no terminal to ask on.
    """
    try:
        fd = os.open(TERMINAL, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise ClientError(
            f"the endpoint asks for a password, and there is no terminal to ask on ({TERMINAL}: {exc.strerror})"
        ) from None
    try:
        try:
            saved = termios.tcgetattr(fd)
        except termios.error:
            raise ClientError(f"the endpoint asks for a password, and {TERMINAL} is not a terminal") from None
        line = bytearray()
        try:
            with stop_on_signals():
                termios.tcsetattr(fd, termios.TCSADRAIN, _quiet(saved))
                try:
                    _write_all(fd, _printable(prompt).encode("utf-8", "replace"))
                    _read_line(fd, line)
                finally:
                    termios.tcsetattr(fd, termios.TCSADRAIN, saved)
                    # Echo was off, so the user's Enter left the cursor on the prompt line.
                    _write_all(fd, b"\n")
            return bytes(line)
        finally:
            line[:] = bytes(len(line))
    finally:
        os.close(fd)


def _quiet(attributes: list) -> list:
    """Line mode, signals on, echo off, Enter (CR) ends the line."""
    iflag, oflag, cflag, lflag, ispeed, ospeed, cc = attributes
    iflag = (iflag | termios.ICRNL) & ~(termios.IGNCR | termios.INLCR)
    lflag = (lflag | termios.ICANON | termios.ISIG) & ~(termios.ECHO | termios.ECHOE | termios.ECHOK | termios.ECHONL)
    return [iflag, oflag, cflag, lflag, ispeed, ospeed, list(cc)]


def _printable(prompt: str) -> str:
    # The prompt comes from the endpoint: no escape sequences reach the terminal.
    return "".join(c if c.isprintable() else "?" for c in prompt)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except OSError:
            return  # a terminal that went away cannot be told anything more
        view = view[written:]


def _read_line(fd: int, line: bytearray) -> None:
    """Append bytes up to the first CR or LF (dropped) or end of file."""
    chunk = bytearray(1024)
    try:
        while len(line) < MAX_LINE:
            try:
                count = os.readv(fd, [chunk])
            except OSError as exc:
                raise ClientError(f"cannot read the password from {TERMINAL}: {exc.strerror}") from None
            if not count:
                return
            ends = [index for index in (chunk.find(b"\n", 0, count), chunk.find(b"\r", 0, count)) if index >= 0]
            with memoryview(chunk) as data:
                line += data[: min(ends) if ends else count]
            if ends:
                return
    finally:
        chunk[:] = bytes(len(chunk))
