"""The proxy's options, its table and its command line, checked.

The listening side is an endpoint like a daemon's (the shared groups:
endpoint, socket, TLS, connection and handshake limits, read into an
EndpointConfig); the proxy adds its TARGET and the TLS it connects there with.
"""

from __future__ import annotations

from dataclasses import dataclass

from capsudo.core import (FLAG, ConnectionLimits, Option, SessionLimits, UsageError, build_config,
                          connection_limit_options, endpoint_option, handshake_limit_options, read_command_line,
                          socket_options, tls_options)
from capsudo.transport import Endpoint, Owner, TlsOptions, parse_endpoint

TARGET_TLS_SECTION = "TLS towards a tls:// TARGET"
TARGET_TLS_FIELDS = ("target-tls-cert", "target-tls-key", "target-tls-ca")


def proxy_options() -> list[Option]:
    return [
        endpoint_option("where to listen", excludes=("stdio",)),
        Option("stdio", FLAG, False, "serve one session on stdin/stdout as the accepting side of a multiplexed "
               "channel (what ssh:// runs)", excludes=("endpoint",)),
        *socket_options("a Unix LISTEN socket"),
        *tls_options(aliases=True),
        *tls_options("target-", TARGET_TLS_SECTION,
                     ("$CAPSUDO_TLS_CERT", "$CAPSUDO_TLS_KEY", "$CAPSUDO_TLS_CA")),
        *connection_limit_options(),
        *handshake_limit_options(),
    ]


@dataclass(frozen=True)
class ProxySettings:
    target: Endpoint
    listen: Endpoint | None
    stdio: bool
    owner: Owner | None
    mode: int
    allow_unsafe_directory: bool
    listen_tls: TlsOptions | None
    target_tls: TlsOptions | None
    connections: ConnectionLimits
    limits: SessionLimits


def _target_tls(values, labels) -> TlsOptions | None:
    cert, key, ca = (values.get(field) for field in TARGET_TLS_FIELDS)
    try:
        if cert is None and key is None and ca is None:
            return TlsOptions.from_environment()
        if ca is None:
            raise UsageError(f"{labels['target-tls-cert' if cert else 'target-tls-key']} needs "
                             f"{labels['target-tls-ca']} as well")
        return TlsOptions(cert, key, ca)
    except ValueError as exc:
        raise UsageError(f"--target-tls-*: {exc}") from None


def parse_command_line(argv) -> ProxySettings | None:
    """The settings argv describes; None for -h or -V. Raises UsageError."""
    values, labels, operands = read_command_line(proxy_options(), argv)
    if values is None or values == "version":
        return None
    if len(operands) != 1:
        raise UsageError("exactly one TARGET endpoint is needed" if not operands else f"unexpected argument {operands[1]!r}")
    stdio = bool(values.pop("stdio", False))
    if not stdio and "endpoint" not in values:
        raise UsageError("give either -S LISTEN or --stdio")
    target_tls = _target_tls({field: values.pop(field) for field in TARGET_TLS_FIELDS if field in values}, labels)
    try:
        target = parse_endpoint(operands[0])
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    listening = build_config(values, labels, proxy_options())
    return ProxySettings(target, listening.address, stdio, listening.owner, listening.mode,
                         listening.allow_unsafe_directory, listening.tls, target_tls,
                         listening.connection_limits, listening.session_limits)
