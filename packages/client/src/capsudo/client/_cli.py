"""`capsudo [-S endpoint] [-i|-n] [-s] [-e KEY=VALUE]... [--] [program [args...]]`"""

from __future__ import annotations

import os
import sys

from capsudo.core import ClientError, UsageError, build_request, default_endpoint, parse_options

USAGE = """\
usage: capsudo [-S endpoint] [-i|-n] [-s] [-e KEY=VALUE]... [--] [program [args...]]

Run a program through a capsudod endpoint, with this terminal's stdin,
stdout and stderr; exits with the program's status.

  -S endpoint   where the daemon listens (default: $CAPSUDO_SOCKET, else
                /run/capsudo/default): a path or unix:///path
  -i            interactive session: the program gets a terminal
  -n            non-interactive session (default unless stdin and stdout
                are both terminals)
  -s            run $SHELL (or sh)
  -e KEY=VALUE  ask for an environment entry (the endpoint may refuse it)
  -h            show this help
"""

SHORT = {"S": True, "i": False, "n": False, "s": False, "e": True, "h": False}
LONG = {"help": False}


def _error(message: str) -> None:
    sys.stderr.write(f"capsudo: error: {message}\n")


def _parse(argv: list[str]):
    options, operands = parse_options(argv, SHORT, LONG)
    endpoint = None
    interactive = None
    shell = False
    env_entries: list[str] = []
    for name, value in options:
        if name in ("-h", "--help"):
            return None
        if name == "-S":
            endpoint = value
        elif name == "-i":
            interactive = True
        elif name == "-n":
            interactive = False
        elif name == "-s":
            shell = True
        elif name == "-e":
            if "=" not in value or value.startswith("="):
                raise UsageError(f"-e takes KEY=VALUE, got {value!r}")
            env_entries.append(value)
    if shell:
        operands = [os.environ.get("SHELL") or "sh", *operands]
    return endpoint or default_endpoint(), interactive, env_entries, operands


def _ask_secret(prompt: str) -> bytes:
    from capsudo.core._secret_prompt import ask_secret

    return ask_secret(prompt)


def main(argv: list[str] | None = None) -> int:
    try:
        parsed = _parse(sys.argv[1:] if argv is None else argv)
    except UsageError as exc:
        _error(f"{exc} (see capsudo -h)")
        return 2
    if parsed is None:
        sys.stdout.write(USAGE)
        return 0
    endpoint, interactive, env_entries, program = parsed
    request = build_request(program, env_entries=env_entries, interactive=interactive)
    try:
        if "://" in endpoint and not endpoint.startswith("unix://"):
            raise ClientError(f"{endpoint}: unsupported endpoint address")
        from capsudo.core import run_unix_session

        result = run_unix_session(
            endpoint.removeprefix("unix://"),
            request,
            ask_secret=_ask_secret,
            on_retry=lambda: sys.stderr.write("Sorry, try again.\n"),
        )
    except ClientError as exc:
        _error(str(exc))
        return exc.status
    except KeyboardInterrupt:
        return 130
    except BaseException as exc:
        from capsudo.core._terminal import Interrupted

        if isinstance(exc, Interrupted):
            return 128 + exc.signum
        raise
    for text in result.errors:
        _error(text)
    return result.status & 0xFF
