"""`capsudod [-S endpoint] [-f] [-E] [-e KEY=VALUE]... [-o user[:group]] [-m mode] [--] [program [args...]]`"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from capsudo.core import Policy, SessionLimits, UsageError, parse_options

USAGE = """\
usage: capsudod [-S endpoint] [-f] [-E] [-e KEY=VALUE]... [-o user[:group]] [-m mode]
                [limits] [--] [program [args...]]

Hold this process's privilege and delegate it to whoever can reach the
endpoint. The program (default: sh) is a prefix: clients' arguments are
appended to it. Its environment holds only the -e entries and, unless -E,
the client's entries (a -e entry wins over a client's entry of that name).

  -S endpoint        listen on this Unix socket (a path or unix:///path);
                     without -S, serve one session on the socket on stdin
  -f                 ignore the client's arguments: run exactly the program
  -E                 ignore the client's environment entries
  -e KEY=VALUE       set an environment entry for the program (repeatable)
  -o user[:group]    owner of the socket (names or numbers; :group alone)
  -m mode            octal permissions of the socket (default 0770)
  -h                 show this help

limits:
  --max-sessions N         sessions at once (default 256); more are refused
  --handshake-timeout S    seconds a client has to send its request (default 10)
  --max-items N            arguments plus environment entries (default 65536)
  --max-bytes N            total bytes of those (default 4194304)
  --hangup-grace S         seconds between SIGHUP and SIGKILL when a client
                           leaves or the daemon stops (default 2)
"""

SHORT = {"S": True, "f": False, "E": False, "e": True, "o": True, "m": True, "h": False}
LONG = {
    "help": False,
    "max-sessions": True,
    "handshake-timeout": True,
    "max-items": True,
    "max-bytes": True,
    "hangup-grace": True,
}


@dataclass
class DaemonConfig:
    endpoint: str | None = None
    owner: object = None
    mode: int = 0o770
    policy: Policy = field(default_factory=Policy)
    limits: SessionLimits = field(default_factory=SessionLimits)
    max_sessions: int = 256


def _number(name: str, value: str, kind=int, minimum=0):
    try:
        number = kind(value)
    except ValueError:
        raise UsageError(f"{name} takes a number, got {value!r}") from None
    if number < minimum or number != number:
        raise UsageError(f"{name} must be at least {minimum}, got {value!r}")
    return number


def parse_command_line(argv: list[str]) -> DaemonConfig | None:
    from capsudo.transport import parse_mode, parse_owner

    options, program = parse_options(argv, SHORT, LONG)
    config = DaemonConfig()
    fixed_arguments = fixed_environment = False
    environment: dict[str, str] = {}
    limits: dict[str, float] = {}
    for name, value in options:
        if name in ("-h", "--help"):
            return None
        if name == "-S":
            config.endpoint = value
        elif name == "-f":
            fixed_arguments = True
        elif name == "-E":
            fixed_environment = True
        elif name == "-e":
            key, sep, entry_value = value.partition("=")
            if not sep or not key:
                raise UsageError(f"-e takes KEY=VALUE, got {value!r}")
            environment[key] = entry_value
        elif name in ("-o", "-m"):
            try:
                if name == "-o":
                    config.owner = parse_owner(value)
                else:
                    config.mode = parse_mode(value)
            except ValueError as exc:
                raise UsageError(str(exc)) from None
        elif name == "--max-sessions":
            config.max_sessions = _number(name, value, minimum=1)
        elif name == "--handshake-timeout":
            limits["handshake_timeout"] = _number(name, value, float, minimum=0.001)
        elif name == "--max-items":
            limits["max_items"] = _number(name, value, minimum=1)
        elif name == "--max-bytes":
            limits["max_bytes"] = _number(name, value, minimum=1)
        elif name == "--hangup-grace":
            limits["hangup_grace"] = _number(name, value, float)
    config.policy = Policy(tuple(program), fixed_arguments, fixed_environment, environment)
    config.limits = SessionLimits(**limits)
    return config


def main(argv: list[str] | None = None) -> int:
    try:
        config = parse_command_line(sys.argv[1:] if argv is None else argv)
    except UsageError as exc:
        sys.stderr.write(f"capsudod: {exc} (see capsudod -h)\n")
        return 2
    if config is None:
        sys.stdout.write(USAGE)
        return 0

    import trio

    from ._server import ServerSettings, log, serve_listener, serve_stdin

    settings = ServerSettings(config.policy, config.limits, config.max_sessions)
    if config.endpoint is None:
        trio.run(serve_stdin, settings)
        return 0

    from capsudo.transport import EndpointError, open_unix_listener

    async def listen_and_serve() -> int:
        try:
            listener = await open_unix_listener(
                config.endpoint.removeprefix("unix://"), owner=config.owner, mode=config.mode
            )
        except EndpointError as exc:
            log(str(exc))
            return 1
        log(f"listening on {listener.path}")
        await serve_listener(listener, settings)
        return 0

    return trio.run(listen_and_serve)
