"""`capsudod [options] [--] [program [args...]]`, or `capsudod --config FILE [--check]`."""

from __future__ import annotations

import sys
from typing import NamedTuple

from capsudo.core import (FLAG, LIMITS_SECTION, TEXT, TLS_SECTION, EndpointConfig, Option, UsageError, build_config,
                          daemon_options, parse_or_status, read_command_line, usage_text)

SYNOPSIS = """\
usage: capsudod [-S endpoint] [-f] [-E] [-e KEY=VALUE]... [-o user[:group]] [-m mode]
                [--tls-cert F --tls-key F --tls-ca F] [-u user] [limits] [--] [program [args...]]
       capsudod --config FILE [--check]"""

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


FILE_SECTION = "a configuration file"
INTROS[FILE_SECTION] = ("One process serves every endpoint the file declares (capsudo.toml(5), docs/configuration.md); "
                        "SIGHUP reads it again. With --config, the file says everything: no other option applies.")


def command_line_options() -> list[Option]:
    """The endpoint's options, and the two that read a file instead."""
    from ._declared import DEFAULT_CONFIG

    return [
        *daemon_options(),
        Option("config", TEXT, None, "serve the endpoints this file declares", metavar="FILE", section=FILE_SECTION),
        Option("check", FLAG, False, "check the file, print what it would serve, and exit: 0 if it is good, 2 if "
               f"not (without --config: {DEFAULT_CONFIG})", section=FILE_SECTION),
    ]


def usage() -> str:
    return usage_text(SYNOPSIS, DESCRIPTION, command_line_options(), INTROS, EPILOG)


class FileToServe(NamedTuple):
    """`--config FILE [--check]`: the endpoints are the file's."""

    path: str
    check: bool


def parse_command_line(argv: list[str]) -> EndpointConfig | FileToServe | None:
    """The configuration argv describes, or the path of a file to serve; None for -h. Raises UsageError."""
    values, labels, program = read_command_line(command_line_options(), argv)
    if values is None or values == "version":
        return None
    if "config" in values or "check" in values:
        from ._declared import DEFAULT_CONFIG

        others = [labels[field] for field in values if field not in ("config", "check")]
        if others or program:
            raise UsageError(f"{others[0] if others else repr(program[0])} does not go with --config or --check: "
                             "the file says everything")
        return FileToServe(values.get("config", DEFAULT_CONFIG), "check" in values)
    if program:
        values["program"] = program
    approval = [labels[field] for field in ("approve", "approval-timeout", "approvers") if field in values]
    if approval:
        # Someone must be able to decide: the control socket of a configuration file.
        raise UsageError(f"{approval[0]} needs --config, a file with a [control] table (approve = true there)")
    return build_config(values, labels)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    config, status = parse_or_status("capsudod", usage, command_line_options(), argv, parse_command_line)
    if status is not None:
        return status
    if isinstance(config, FileToServe):
        from ._file_daemon import serve_file

        return serve_file(config.path, check=config.check)
    return _serve_one(config)


def _serve_one(config: EndpointConfig) -> int:
    import trio

    from capsudo.core import AuditFiles, hold_stop_signals

    from ._endpoint import DaemonEndpoint, EndpointStartError, bound_address
    from ._server import log, serve_endpoint, serve_without_endpoint

    try:
        events = AuditFiles().sink(config.audit, None)
    except OSError as exc:
        log(f"cannot open the audit sink {exc.filename}: {exc.strerror}")
        return 1
    if config.address is None:
        if (unpinned := config.policy.unpinned_environment_warning()) is not None:
            log(f"warning: {unpinned}")
        return serve_without_endpoint(config, events)

    async def listen_and_serve() -> int:
        try:
            endpoint = await DaemonEndpoint.open(None, config, log=log, events=events)
        except EndpointStartError as exc:
            log(str(exc))
            return 1
        return await serve_endpoint(endpoint, bound_address(config.address, endpoint.listener))

    hold_stop_signals()
    return trio.run(listen_and_serve)
