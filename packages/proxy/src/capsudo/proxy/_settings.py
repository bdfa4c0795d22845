"""The proxy's command line, checked."""

from __future__ import annotations

from dataclasses import dataclass, field

from capsudo.core import ConnectionLimits, SessionLimits, UsageError, number_option, parse_options
from capsudo.transport import DEFAULT_MODE, Endpoint, Owner, TlsOptions, parse_endpoint, parse_mode, parse_owner


@dataclass
class ProxySettings:
    target: Endpoint
    listen: Endpoint | None = None
    stdio: bool = False
    owner: Owner | None = None
    mode: int = DEFAULT_MODE
    allow_unsafe_directory: bool = False
    listen_tls: TlsOptions | None = None
    target_tls: TlsOptions | None = None
    connections: ConnectionLimits = field(default_factory=ConnectionLimits)
    limits: SessionLimits = field(default_factory=SessionLimits)


def _tls(cert: str | None, key: str | None, ca: str | None, what: str) -> TlsOptions | None:
    if cert is None and key is None and ca is None:
        return None
    if ca is None:
        raise UsageError(f"{what} needs a CA certificate as well")
    try:
        return TlsOptions(cert, key, ca)
    except ValueError as exc:
        raise UsageError(f"{what}: {exc}") from None


def parse_command_line(argv, short, long) -> ProxySettings | None:
    options, operands = parse_options(argv, short, long)
    values: dict[str, str | None] = {}
    for name, value in options:
        if name in ("-h", "--help"):
            return None
        values[name] = value
    if len(operands) != 1:
        raise UsageError("exactly one TARGET endpoint is needed" if not operands else f"unexpected argument {operands[1]!r}")
    stdio = "--stdio" in values
    if stdio == ("-S" in values):
        raise UsageError("give either -S LISTEN or --stdio")
    try:
        settings = ProxySettings(target=parse_endpoint(operands[0]), stdio=stdio)
        if "-S" in values:
            settings.listen = parse_endpoint(values["-S"])
        if "-o" in values:
            settings.owner = parse_owner(values["-o"])
        if "-m" in values:
            settings.mode = parse_mode(values["-m"])
        settings.allow_unsafe_directory = "--allow-unsafe-directory" in values
        target_tls = _tls(values.get("--target-tls-cert"), values.get("--target-tls-key"),
                          values.get("--target-tls-ca"), "--target-tls-*")
        settings.target_tls = target_tls or TlsOptions.from_environment()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    settings.listen_tls = _tls(values.get("--tls-cert"), values.get("--tls-key"),
                               values.get("--tls-client-ca"), "--tls-cert/--tls-key/--tls-client-ca")
    connections = {}
    for flag in ("--max-sessions", "--max-sessions-per-peer", "--max-handshakes", "--max-handshakes-per-peer"):
        if flag in values:
            connections[flag[2:].replace("-", "_")] = number_option(flag, values[flag], int, 1)
    settings.connections = ConnectionLimits(**connections)
    limits = {}
    if "--handshake-timeout" in values:
        limits["handshake_timeout"] = number_option("--handshake-timeout", values["--handshake-timeout"], float, 0.001)
    if "--max-items" in values:
        limits["max_items"] = number_option("--max-items", values["--max-items"], int, 1)
    if "--max-bytes" in values:
        limits["max_bytes"] = number_option("--max-bytes", values["--max-bytes"], int, 1)
    settings.limits = SessionLimits(**limits)
    return settings
