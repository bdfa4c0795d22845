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

from capsudo.core import ClientError, UsageError, build_request, default_endpoint, parse_options

USAGE = """\
usage: capsudo [-S endpoint] [--tls-cert F --tls-key F] [--tls-ca F] [-i|-n] [-s]
               [-e KEY=VALUE]... [--] [program [args...]]

Run a program through a capsudod endpoint, with this terminal's stdin,
stdout and stderr; exits with the program's status.

  -S endpoint   where the daemon listens (default: $CAPSUDO_SOCKET, else
                /run/capsudo/default): a path or unix:///path,
                tcp://HOST:PORT, tls://HOST:PORT or vsock://CID:PORT
  --tls-cert F  for tls://: our certificate (default: $CAPSUDO_TLS_CERT)
  --tls-key F   its private key (default: $CAPSUDO_TLS_KEY)
  --tls-ca F    the CA that signed the daemon's certificate
                (default: $CAPSUDO_TLS_CA)
  -i            interactive session: the program gets a terminal
  -n            non-interactive session (default unless stdin and stdout
                are both terminals)
  -s            run $SHELL (or sh)
  -e KEY=VALUE  ask for an environment entry (the endpoint may refuse it)
  -h            show this help
"""

SHORT = {"S": True, "i": False, "n": False, "s": False, "e": True, "h": False}
LONG = {"help": False, "tls-cert": True, "tls-key": True, "tls-ca": True}
TLS_FLAGS = ("--tls-cert", "--tls-key", "--tls-ca")


def _error(message: str) -> None:
    sys.stderr.write(f"capsudo: error: {message}\n")


def _parse(argv: list[str]):
    options, operands = parse_options(argv, SHORT, LONG)
    endpoint = None
    interactive = None
    shell = False
    env_entries: list[str] = []
    tls_paths: dict[str, str] = {}
    for name, value in options:
        if name in ("-h", "--help"):
            return None
        if name == "-S":
            endpoint = value
        elif name in TLS_FLAGS:
            tls_paths[name] = value
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
    return endpoint or default_endpoint(), tls_paths, interactive, env_entries, operands


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
        _error(f"{exc} (see capsudo -h)")
        return 2
    if parsed is None:
        sys.stdout.write(USAGE)
        return 0
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
    for text in result.errors:
        _error(text)
    return result.status & 0xFF
