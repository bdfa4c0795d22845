"""`capsudod [-S endpoint] [-f] [-E] [-e KEY=VALUE]... [-o user[:group]] [-m mode] [--] [program [args...]]`"""

from __future__ import annotations

import sys

from capsudo.core import (LIMITS_SECTION, TLS_SECTION, EndpointConfig, UsageError, build_config, command_line_status,
                          daemon_options, read_command_line, usage_error, usage_text)

SYNOPSIS = """\
usage: capsudod [-S endpoint] [-f] [-E] [-e KEY=VALUE]... [-o user[:group]] [-m mode]
                [--tls-cert F --tls-key F --tls-ca F] [limits] [--] [program [args...]]"""

DESCRIPTION = """\
Hold this process's privilege and delegate it to whoever can reach the
endpoint. The program (default: sh) is a prefix: clients' arguments are
appended to it. Its environment holds only the -e entries and, unless -E,
the client's entries (a -e entry wins over a client's entry of that name)."""

INTROS = {
    TLS_SECTION: "All three are needed for tls://; only clients whose certificate the CA signed get in. "
                 "--tls-client-ca is an older name of --tls-ca.",
    LIMITS_SECTION: "A peer is a uid on a Unix socket, an address on tcp://, a client certificate on tls://, "
                    "a context id on vsock://; a client past a limit is refused at once with a line that names "
                    "it. Times take 30s, 5m, 500ms or plain seconds; sizes 64K, 1M or plain bytes. Memory held "
                    "by unfinished handshakes stays below about max-handshakes x (1.5 x max-bytes + 96 x "
                    "max-items + 1 MiB).",
}

EPILOG = """\
A tcp:// endpoint has no access control: whoever reaches the port holds the
capability (a warning says so). Use tls:// or a Unix socket beyond loopback."""


def usage() -> str:
    return usage_text(SYNOPSIS, DESCRIPTION, daemon_options(), INTROS, EPILOG)


def parse_command_line(argv: list[str]) -> EndpointConfig | None:
    """The configuration argv describes; None for -h. Raises UsageError."""
    values, labels, program = read_command_line(daemon_options(), argv)
    if values is None or values == "version":
        return None
    if program:
        values["program"] = program
    return build_config(values, labels)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        parsed = read_command_line(daemon_options(), argv)
        status = command_line_status("capsudod", usage(), parsed)
        if status is not None:
            return status
        config = parse_command_line(argv)
    except UsageError as exc:
        return usage_error("capsudod", exc)

    import trio

    from capsudo.core import hold_stop_signals

    from ._server import ServerSettings, log, serve_listener, serve_without_endpoint

    settings = ServerSettings(config.policy, config.session_limits, config.connection_limits)
    if (unpinned := config.policy.unpinned_environment_warning()) is not None:
        log(f"warning: {unpinned}")
    if config.address is None:
        return serve_without_endpoint(settings)

    from capsudo.transport import EndpointError, open_listener

    async def listen_and_serve() -> int:
        try:
            listener = await open_listener(
                config.address,
                tls=config.tls,
                owner=config.owner,
                mode=config.mode,
                allow_unsafe_directory=config.allow_unsafe_directory,
                handshake_timeout=config.session_limits.handshake_timeout,
                # A refused TLS client is one line in the log; the others go on.
                on_handshake_error=lambda error: log(str(error)),
                channel_limits=config.channel_limits,
            )
        except EndpointError as exc:
            log(str(exc))
            return 1
        warning = getattr(listener, "warning", None)
        if warning:
            log(f"warning: {warning}")
        where = _bound_address(config.address, listener)
        log(f"listening on {where}")
        return await serve_listener(listener, settings, where)

    hold_stop_signals()
    return trio.run(listen_and_serve)


def _bound_address(endpoint, listener) -> str:
    """The endpoint as bound: with the real port when 0 was asked for."""
    from capsudo.transport import TcpEndpoint, TlsEndpoint, UnixEndpoint, VsockEndpoint

    if isinstance(endpoint, UnixEndpoint):
        return listener.path
    port = listener.port
    if isinstance(endpoint, VsockEndpoint):
        return str(VsockEndpoint(endpoint.cid, port))
    kind = TlsEndpoint if isinstance(endpoint, TlsEndpoint) else TcpEndpoint
    return str(kind(endpoint.host, port))
