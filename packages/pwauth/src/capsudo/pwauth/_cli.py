"""`capsudod-pwauth -S endpoint [-o user[:group]] [-m mode] [--service NAME] [--remember DURATION] [limits] [--] [command [args...]]`"""

from __future__ import annotations

import os
import shutil
import sys

from capsudo.core import (INTEGER, LIMITS_SECTION, SAFE_PATH, SECONDS, TEXT, Option, UsageError, build_config,
                          convert, endpoint_option, handshake_timeout_option, parse_or_status, read_command_line,
                          socket_options, usage_text)

from ._settings import DEFAULT_SERVICE, FrontEndSettings

SYNOPSIS = """\
usage: capsudod-pwauth -S endpoint [-o user[:group]] [-m mode] [--service NAME]
                       [--remember DURATION] [limits] [--] [command [args...]]"""

DESCRIPTION = """\
Ask whoever connects for their own password, check it through PAM, and
hand the connection to the command (default: capsudod), which serves the
session as if the client had come straight to it."""

INTROS = {LIMITS_SECTION: "Times take 30s, 5m, 500ms or plain seconds."}


def pwauth_options() -> list[Option]:
    defaults = FrontEndSettings
    section = LIMITS_SECTION
    return [
        endpoint_option("listen on this Unix socket (a path or unix:///path)"),
        *socket_options("the socket"),
        Option("service", TEXT, DEFAULT_SERVICE, "PAM service, /etc/pam.d/NAME must exist", metavar="NAME"),
        Option("remember", SECONDS, defaults.remember, "after a right password, let the same uid on the same "
               "terminal session in without asking for this long", metavar="DURATION",
               default_text="0, ask every time"),
        handshake_timeout_option().replace(help="time a client has to send its first message"),
        Option("fail-delay", SECONDS, defaults.fail_delay, "time from the start of a failed check to the reply; "
               "checks for one user run one at a time", section=section),
        Option("max-failures", INTEGER, defaults.max_failures, "failures within the window that lock a user out "
               "(0: no lock-out)", section=section),
        Option("failure-window", SECONDS, defaults.failure_window, "how long a failure counts", minimum=0.001,
               section=section),
        Option("pam-timeout", SECONDS, defaults.pam_timeout, "time PAM may take before the check fails",
               minimum=0.001, section=section),
        Option("max-pam-threads", INTEGER, defaults.max_pam_threads, "PAM checks running at once", minimum=1,
               section=section),
        Option("max-clients", INTEGER, defaults.max_clients, "connections being authenticated at once",
               minimum=1, section=section),
        Option("max-clients-per-user", INTEGER, defaults.max_clients_per_user, "the same, per user", minimum=1,
               section=section),
        Option("shutdown-grace", SECONDS, defaults.shutdown_grace, "on SIGTERM, time chained commands get "
               "between SIGTERM and SIGKILL", section=section),
    ]


def usage() -> str:
    return usage_text(SYNOPSIS, DESCRIPTION, pwauth_options(), INTROS)


PAM_DIRECTORY = "/etc/pam.d"


class StartupError(Exception):
    """The front-end cannot start; the text says why, on one line."""


def parse_command_line(argv: list[str]) -> FrontEndSettings | None:
    """Settings from argv; None for -h or -V. Raises UsageError."""
    table = pwauth_options()
    values, labels, command = read_command_line(table, argv)
    if values is None or values == "version":
        return None
    if "endpoint" not in values:
        raise UsageError("-S endpoint is required")
    # The socket and the handshake are an endpoint's, read as the daemon reads them.
    shared = {field: values.pop(field) for field in _SHARED if field in values}
    listening = build_config(shared, labels, table)
    if not listening.address.passes_descriptors:
        # The chained daemon reads the rest of the handshake from the very socket.
        raise UsageError(f"{shared['endpoint']}: the password front-end listens only on a Unix socket")
    settings = FrontEndSettings(endpoint=listening.address.path, owner=listening.owner, mode=listening.mode,
                                allow_unsafe_directory=listening.allow_unsafe_directory,
                                handshake_timeout=listening.session_limits.handshake_timeout)
    options = {option.name: option for option in table}
    for field, raw in values.items():
        value = convert(options[field], raw, labels[field])
        if field == "service" and (not value or "/" in value or value.startswith(".")):
            # The name becomes a file name under /etc/pam.d.
            raise UsageError(f"invalid PAM service name {value!r}")
        setattr(settings, field.replace("-", "_"), value)
    if command:
        settings.command = tuple(command)
    return settings


_SHARED = ("endpoint", "owner", "mode", "allow-unsafe-directory", "handshake-timeout")


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
    argv = sys.argv[1:] if argv is None else argv
    settings, status = parse_or_status("capsudod-pwauth", usage, pwauth_options(), argv, parse_command_line)
    if status is not None:
        return status
    try:
        check_service(settings.service)
        settings.command = (resolve_command(settings.command[0]), *settings.command[1:])
        _load_pam()
    except StartupError as exc:
        sys.stderr.write(f"capsudod-pwauth: error: {exc}\n")
        return 1

    import trio

    from ._server import run_front_end

    from capsudo.core import hold_stop_signals

    hold_stop_signals()
    return trio.run(run_front_end, settings)
