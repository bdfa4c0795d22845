"""`capsudo [-S endpoint] [-i|-n] [-s] [-e KEY=VALUE]... [--] [program [args...]]`

A Unix endpoint takes the blocking standard-library path, which imports
neither trio nor construct: that is most of the command's start-up time.
tcp:// and tls:// run the multiplexed channel on a poll() loop of the
standard library, for the same reason; vsock:// and ssh:// run it on trio,
loaded only then.
"""

from __future__ import annotations

import os
import sys

from capsudo.core import (DEFAULT_ENDPOINT, FLAG, LIST, SECONDS, ClientError, Option, UsageError, build_request,
                          default_endpoint, endpoint_option, read_command_line, tls_options, usage_error, usage_text)

SYNOPSIS = """\
usage: capsudo [-S endpoint] [--tls-cert F --tls-key F] [--tls-ca F] [-i|-n] [-s]
               [-e KEY=VALUE]... [--] [program [args...]]
       capsudo -l [--json] [-S endpoint]"""

DESCRIPTION = """\
Run a program through a capsudod endpoint, with this terminal's stdin,
stdout and stderr; exits with the program's status."""

OPTIONS = [
    endpoint_option("where the daemon listens: a path or unix:///path, tcp://HOST:PORT, tls://HOST:PORT, "
                    "vsock://CID:PORT or ssh://[USER@]HOST[:PORT]/PATH", default_text=f"$CAPSUDO_SOCKET, else {DEFAULT_ENDPOINT}"),
    Option("interactive", FLAG, False, "interactive session: the program gets a terminal", short="i",
           excludes=("non-interactive",)),
    Option("non-interactive", FLAG, False, "non-interactive session", short="n", excludes=("interactive",),
           default_text="unless stdin and stdout are both terminals"),
    Option("shell", FLAG, False, "run $SHELL (or sh)", short="s"),
    Option("env", LIST, (), "ask for an environment entry (the endpoint may refuse it)", short="e",
           metavar="KEY=VALUE"),
    *tls_options(defaults=("$CAPSUDO_TLS_CERT", "$CAPSUDO_TLS_KEY", "$CAPSUDO_TLS_CA")),
    Option("list", FLAG, False, "print what the endpoint says it does, and run nothing (exit status 3: it does "
           "not describe itself)", short="l"),
    Option("json", FLAG, False, "with -l: print it as one JSON object, for programs"),
    Option("describe-timeout", SECONDS, 5.0, "with -l: how long to wait for the endpoint's answer", minimum=0.001),
]
TLS_FIELDS = ("tls-cert", "tls-key", "tls-ca")


def _error(message: str) -> None:
    sys.stderr.write(f"capsudo: error: {message}\n")


def _parse(argv: list[str]):
    values, labels, operands = read_command_line(OPTIONS, argv)
    if values is None or values == "version":
        return values
    interactive = True if "interactive" in values else False if "non-interactive" in values else None
    env_entries = values.get("env", [])
    for value in env_entries:
        if "=" not in value or value.startswith("="):
            raise UsageError(f"{labels['env']} takes KEY=VALUE, got {value!r}")
    # Keyed by flag, as the messages name them.
    tls_paths = {f"--{field}": values[field] for field in TLS_FIELDS if field in values}
    if "list" in values:
        if operands:
            raise UsageError(f"{labels['list']} runs nothing, so it takes no program")
        from capsudo.core import convert

        timeout_option = next(option for option in OPTIONS if option.name == "describe-timeout")
        timeout = convert(timeout_option, values["describe-timeout"], labels["describe-timeout"]) \
            if "describe-timeout" in values else timeout_option.default
        return "list", values.get("endpoint") or default_endpoint(), tls_paths, "json" in values, timeout
    for only_with_list in ("json", "describe-timeout"):
        if only_with_list in values:
            raise UsageError(f"{labels[only_with_list]} goes with -l")
    if "shell" in values:
        operands = [os.environ.get("SHELL") or "sh", *operands]
    return values.get("endpoint") or default_endpoint(), tls_paths, interactive, env_entries, operands


def _unix_path(endpoint: str) -> str | None:
    """The socket path when `endpoint` passes descriptors as they are; None for a channel."""
    from capsudo.transport import parse_endpoint

    try:
        parsed = parse_endpoint(endpoint)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return parsed.path if parsed.passes_descriptors else None


def _tls_options(endpoint: str, tls_paths: dict[str, str]):
    """The TLS settings for a tls:// endpoint: flags first, then the environment."""
    from capsudo.transport import TlsEndpoint, parse_endpoint

    try:
        parsed = parse_endpoint(endpoint)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not isinstance(parsed, TlsEndpoint):
        if tls_paths:
            raise UsageError(f"{next(iter(tls_paths))} applies only to a tls:// endpoint")
        return None
    from capsudo.transport import TlsOptions  # ssl, for tls:// only

    try:
        environment = TlsOptions.from_environment()
    except ValueError as exc:
        if not tls_paths:
            raise UsageError(str(exc)) from None
        environment = None
    cert = tls_paths.get("--tls-cert", environment.cert if environment else None)
    key = tls_paths.get("--tls-key", environment.key if environment else None)
    ca = tls_paths.get("--tls-ca", environment.ca if environment else None)
    if ca is None:
        raise UsageError(f"{endpoint} needs the CA of the daemon's certificate: --tls-ca or $CAPSUDO_TLS_CA")
    try:
        return TlsOptions(cert, key, ca)
    except ValueError as exc:
        raise UsageError(f"{exc} (--tls-cert and --tls-key, or $CAPSUDO_TLS_CERT and $CAPSUDO_TLS_KEY)") from None


def _ask_secret(prompt: str) -> bytes:
    from capsudo.core import ask_secret

    return ask_secret(prompt)


def main(argv: list[str] | None = None) -> int:
    try:
        parsed = _parse(sys.argv[1:] if argv is None else argv)
    except UsageError as exc:
        return usage_error("capsudo", exc)
    if parsed is None:
        sys.stdout.write(usage_text(SYNOPSIS, DESCRIPTION, OPTIONS))
        return 0
    if parsed == "version":
        from capsudo.core import command_line_status

        return command_line_status("capsudo", "", (parsed,))
    if parsed[0] == "list":
        return _list(*parsed[1:])
    endpoint, tls_paths, interactive, env_entries, program = parsed
    try:
        path = _unix_path(endpoint)
        if path is not None and tls_paths:
            raise UsageError(f"{next(iter(tls_paths))} applies only to a tls:// endpoint")
        tls = _tls_options(endpoint, tls_paths) if path is None else None
    except UsageError as exc:
        _error(f"{exc} (see capsudo -h)")
        return 2
    request = build_request(program, env_entries=env_entries, interactive=interactive)
    on_retry = lambda: sys.stderr.write("Sorry, try again.\n")  # noqa: E731
    try:
        if path is not None:
            from capsudo.core import run_unix_session

            result = run_unix_session(path, request, ask_secret=_ask_secret, on_retry=on_retry)
        else:
            from capsudo.core import run_lean_channel_session

            result = run_lean_channel_session(endpoint, request, tls, ask_secret=_ask_secret, on_retry=on_retry)
    except ClientError as exc:
        _error(str(exc))
        return exc.status
    except KeyboardInterrupt:
        return 130
    except BaseException as exc:
        from capsudo.core import Interrupted

        if isinstance(exc, Interrupted):
            return 128 + exc.signum
        raise
    from capsudo.core import NOTE_PREFIX

    for text in result.errors:
        if text.startswith(NOTE_PREFIX):
            sys.stderr.write(f"capsudo: {text}\n")  # what the endpoint left out of the request, not a failure
        else:
            _error(text)
    return result.status & 0xFF


def _list(endpoint: str, tls_paths: dict[str, str], as_json: bool, timeout: float) -> int:
    """`capsudo -l`: what the endpoint says it does."""
    try:
        if _unix_path(endpoint) is not None and tls_paths:
            raise UsageError(f"{next(iter(tls_paths))} applies only to a tls:// endpoint")
        tls = _tls_options(endpoint, tls_paths) if _unix_path(endpoint) is None else None
    except UsageError as exc:
        _error(f"{exc} (see capsudo -h)")
        return 2
    from capsudo.core import describe

    try:
        info = describe(endpoint, timeout=timeout, ask_secret=_ask_secret, tls=tls)
    except ClientError as exc:
        _error(str(exc))
        return exc.status
    except KeyboardInterrupt:
        return 130
    if as_json:
        import json

        sys.stdout.write(json.dumps(info.as_json(), sort_keys=True) + "\n")
    else:
        sys.stdout.write("".join(line + "\n" for line in description_lines(info)))
    return 0


def description_lines(info) -> list[str]:
    """An endpoint's description for people, in the manner of `sudo -l`."""
    import shlex

    lines = [f"{info.name or 'this endpoint'}: {info.description or '(no description)'}"]
    if info.detail != "full":
        lines.append("  (the operator lets it tell nothing more)")
    else:
        command = shlex.join(info.command or [])
        lines.append({
            "pinned": f"  runs exactly: {command} (your arguments are ignored)",
            "prefix": f"  runs: {command} [your arguments...]",
        }.get(info.arguments or "", "  runs: the program you name"))
        if info.program:
            lines.append(f"  program: {info.program}")
        if info.user:
            lines.append(f"  as user: {info.user}")
        pinned = ", ".join(name if value is None else f"{name}={value}"
                           for name, value in (info.environment or {}).items())
        yours = "your -e entries count" if info.client_environment else "your -e entries are ignored"
        lines.append(f"  environment: {yours}" + (f"; pinned: {pinned}" if pinned else ""))
        if info.approval:
            lines.append("  approval: a person approves each session")
        if info.expires is not None:
            import time

            lines.append(f"  expires: {time.strftime('%Y-%m-%d %H:%M:%S %Z', time.localtime(info.expires))}")
        if info.uses_left is not None:
            lines.append(f"  uses left: {info.uses_left}")
    lines.append("  password asked: " + ("yes, by a front-end" if info.password else "no"))
    return lines
