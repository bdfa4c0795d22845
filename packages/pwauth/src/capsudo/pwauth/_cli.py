"""`capsudod-pwauth -S endpoint [-o user[:group]] [-m mode] [--service NAME] [limits] [--] [command [args...]]`"""

from __future__ import annotations

import os
import shutil
import sys

from capsudo.core import SAFE_PATH, UsageError, number_option, parse_options

from ._settings import (DEFAULT_FAIL_DELAY, DEFAULT_FAILURE_WINDOW, DEFAULT_MAX_FAILURES, DEFAULT_SERVICE,
                        FrontEndSettings)

USAGE = f"""\
usage: capsudod-pwauth -S endpoint [-o user[:group]] [-m mode] [--service NAME]
                       [limits] [--] [command [args...]]

Ask whoever connects for their own password, check it through PAM, and
hand the connection to the command (default: capsudod), which serves the
session as if the client had come straight to it.

  -S endpoint        listen on this Unix socket (a path or unix:///path)
  -o user[:group]    owner of the socket (names or numbers; :group alone)
  -m mode            octal permissions of the socket (default 0770)
  --allow-unsafe-directory
                     listen in a directory that another user owns or that
                     group or others may write (not sticky); refused otherwise
  --service NAME     PAM service, /etc/pam.d/NAME must exist (default {DEFAULT_SERVICE})
  -h                 show this help

limits:
  --handshake-timeout S    seconds a client has to send its first message (default 10)
  --fail-delay S           seconds from the start of a failed check to the
                           reply (default {DEFAULT_FAIL_DELAY:g}); checks for one user run one at a time
  --max-failures N         failures within the window that lock a user out
                           (default {DEFAULT_MAX_FAILURES}; 0: no lock-out)
  --failure-window S       seconds a failure counts (default {DEFAULT_FAILURE_WINDOW:g})
  --pam-timeout S          seconds PAM may take before the check fails (default 30)
  --max-pam-threads N      PAM checks running at once (default 4)
  --max-clients N          connections being authenticated at once (default 64)
  --max-clients-per-user N the same, per user (default 8)
  --shutdown-grace S       on SIGTERM, seconds chained commands get between
                           SIGTERM and SIGKILL (default 5)
"""

SHORT = {"S": True, "o": True, "m": True, "h": False}
LONG = {
    "help": False,
    "allow-unsafe-directory": False,
    "service": True,
    "handshake-timeout": True,
    "fail-delay": True,
    "max-failures": True,
    "failure-window": True,
    "pam-timeout": True,
    "max-pam-threads": True,
    "max-clients": True,
    "max-clients-per-user": True,
    "shutdown-grace": True,
}

# option -> (settings field, number type, smallest value)
_NUMBERS = {
    "--handshake-timeout": ("handshake_timeout", float, 0.001),
    "--fail-delay": ("fail_delay", float, 0),
    "--max-failures": ("max_failures", int, 0),
    "--failure-window": ("failure_window", float, 0.001),
    "--pam-timeout": ("pam_timeout", float, 0.001),
    "--max-pam-threads": ("max_pam_threads", int, 1),
    "--max-clients": ("max_clients", int, 1),
    "--max-clients-per-user": ("max_clients_per_user", int, 1),
    "--shutdown-grace": ("shutdown_grace", float, 0),
}

PAM_DIRECTORY = "/etc/pam.d"


class StartupError(Exception):
    """The front-end cannot start; the text says why, on one line."""


def parse_command_line(argv: list[str]) -> FrontEndSettings | None:
    """Settings from argv; None for -h. Raises UsageError."""
    from capsudo.transport import parse_endpoint, parse_mode, parse_owner

    options, command = parse_options(argv, SHORT, LONG)
    settings = FrontEndSettings()
    for name, value in options:
        if name in ("-h", "--help"):
            return None
        if name == "-S":
            try:
                endpoint = parse_endpoint(value)
            except ValueError as exc:
                raise UsageError(str(exc)) from None
            if not endpoint.passes_descriptors:
                # The chained daemon reads the rest of the handshake from the very socket.
                raise UsageError(f"{value}: the password front-end listens only on a Unix socket")
            settings.endpoint = endpoint.path
        elif name in ("-o", "-m"):
            try:
                if name == "-o":
                    settings.owner = parse_owner(value)
                else:
                    settings.mode = parse_mode(value)
            except ValueError as exc:
                raise UsageError(str(exc)) from None
        elif name == "--allow-unsafe-directory":
            settings.allow_unsafe_directory = True
        elif name == "--service":
            # The name becomes a file name under /etc/pam.d.
            if not value or "/" in value or value.startswith("."):
                raise UsageError(f"invalid PAM service name {value!r}")
            settings.service = value
        else:
            field_name, kind, minimum = _NUMBERS[name]
            setattr(settings, field_name, number_option(name, value, kind, minimum))
    if not settings.endpoint:
        raise UsageError("-S endpoint is required")
    if command:
        settings.command = tuple(command)
    return settings


def check_service(service: str, directory: str = PAM_DIRECTORY) -> None:
    """PAM quietly falls back to the `other` service when NAME has no file."""
    path = os.path.join(directory, service)
    if not os.path.isfile(path):
        raise StartupError(
            f"{path} does not exist, and PAM would fall back to its 'other' service; "
            f"install examples/pam.d/capsudo there or name another service with --service"
        )


def resolve_command(name: str) -> str:
    """An absolute path for the chained command, found once at start-up.

    A bare name is looked for beside this front-end first (where the
    capsudod of the same installation lives), then on PATH.
    """
    if "/" in name:
        path = os.path.abspath(name)
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            raise StartupError(f"{name}: not an executable file")
        return path
    own_directory = os.path.dirname(os.path.abspath(sys.argv[0])) if sys.argv and sys.argv[0] else ""
    for search in (own_directory, os.environ.get("PATH") or SAFE_PATH):
        found = shutil.which(name, path=search) if search else None
        if found:
            return os.path.abspath(found)
    raise StartupError(f"{name}: command not found beside capsudod-pwauth or on PATH")


def _load_pam() -> None:
    try:
        import pam

        pam.PamAuthenticator()
    except Exception as exc:  # ImportError, OSError from ctypes: either way, no PAM
        raise StartupError(f"cannot load PAM (python-pam and libpam): {exc}") from None


def main(argv: list[str] | None = None) -> int:
    try:
        settings = parse_command_line(sys.argv[1:] if argv is None else argv)
    except UsageError as exc:
        sys.stderr.write(f"capsudod-pwauth: {exc} (see capsudod-pwauth -h)\n")
        return 2
    if settings is None:
        sys.stdout.write(USAGE)
        return 0
    try:
        check_service(settings.service)
        settings.command = (resolve_command(settings.command[0]), *settings.command[1:])
        _load_pam()
    except StartupError as exc:
        sys.stderr.write(f"capsudod-pwauth: {exc}\n")
        return 1

    import trio

    from ._server import run_front_end

    from capsudo.core import hold_stop_signals

    hold_stop_signals()
    return trio.run(run_front_end, settings)
