"""What a client asks for, and how it reads the replies, independent of transport."""

from __future__ import annotations

import os

from capsudo.proto import NOTE_PREFIX  # re-exported: an Error so prefixed is shown as a note

TYPE_CHECKING = False  # typing and collections cost the client start-up time
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

# Forwarded from the caller's environment when set, and nothing else: the
# program's environment belongs to the daemon.
FORWARDED_VARIABLES = ("TERM", "LANG", "LC_ALL", "LC_CTYPE", "LC_MESSAGES", "COLORTERM")

DEFAULT_ENDPOINT = "/run/capsudo/default"
ENDPOINT_VARIABLE = "CAPSUDO_SOCKET"

# Like sudo: three tries at the password, then give up.
MAX_SECRET_ATTEMPTS = 3


class ClientError(Exception):
    """The session could not run or finish; the text is one line for the user."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


class ClientRequest:
    """What a client asks a daemon for.

    A plain class rather than a dataclass: importing dataclasses (and the
    inspect, ast and re it pulls in) would cost the command line client
    more than its whole session on a local socket.
    """

    __slots__ = ("argv", "env_entries", "interactive", "stdio", "winsize")

    def __init__(
        self,
        argv: list[str] | None = None,
        env_entries: list[str] | None = None,
        interactive: bool = False,
        stdio: tuple[int, int, int] = (0, 1, 2),
        winsize: tuple[int, int, int, int] | None = None,
    ) -> None:
        self.argv = [] if argv is None else argv
        self.env_entries = [] if env_entries is None else env_entries
        self.interactive = interactive
        self.stdio = stdio
        self.winsize = winsize

    def _fields(self) -> tuple:
        return (self.argv, self.env_entries, self.interactive, self.stdio, self.winsize)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ClientRequest):
            return NotImplemented
        return self._fields() == other._fields()

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={value!r}" for name, value in zip(self.__slots__, self._fields()))
        return f"ClientRequest({fields})"


def forwarded_environment(environ: Mapping[str, str] = os.environ) -> list[str]:
    return [f"{name}={environ[name]}" for name in FORWARDED_VARIABLES if name in environ]


def default_endpoint(environ: Mapping[str, str] = os.environ) -> str:
    return environ.get(ENDPOINT_VARIABLE) or DEFAULT_ENDPOINT


def terminal_size(fd: int) -> tuple[int, int, int, int] | None:
    """rows, cols, xpixels, ypixels of the terminal on fd, or None."""
    import fcntl
    import struct
    import termios

    try:
        packed = fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8)
    except OSError:
        return None
    rows, cols, xpixels, ypixels = struct.unpack("HHHH", packed)
    return (rows, cols, xpixels, ypixels) if rows and cols else None


def build_request(
    argv: Sequence[str],
    *,
    env_entries: Sequence[str] = (),
    interactive: bool | None = None,
    stdio: tuple[int, int, int] = (0, 1, 2),
    environ: Mapping[str, str] = os.environ,
) -> ClientRequest:
    """A request as the command line would make it: explicit entries first,
    then the forwarded defaults; interactive when stdin and stdout are terminals."""
    if interactive is None:
        interactive = os.isatty(stdio[0]) and os.isatty(stdio[1])
    winsize = None
    if interactive:
        winsize = terminal_size(stdio[1]) or terminal_size(stdio[0])
    return ClientRequest(
        argv=list(argv),
        env_entries=list(env_entries) + forwarded_environment(environ),
        interactive=interactive,
        stdio=stdio,
        winsize=winsize,
    )
