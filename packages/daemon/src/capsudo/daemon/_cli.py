"""`capsudod [-S endpoint] [-f] [-E] [-e KEY=VALUE]... [-o user[:group]] [-m mode] [--] [program [args...]]`"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from capsudo.core import ConnectionLimits, Policy, SessionLimits, UsageError, number_option, parse_options

USAGE = """\
usage: capsudod [-S endpoint] [-f] [-E] [-e KEY=VALUE]... [-o user[:group]] [-m mode]
                [--tls-cert F --tls-key F --tls-client-ca F] [limits] [--] [program [args...]]

Hold this process's privilege and delegate it to whoever can reach the
endpoint. The program (default: sh) is a prefix: clients' arguments are
appended to it. Its environment holds only the -e entries and, unless -E,
the client's entries (a -e entry wins over a client's entry of that name).

  -S endpoint        listen here: a Unix socket (a path or unix:///path),
                     tcp://HOST:PORT, tls://HOST:PORT or vsock://CID:PORT
                     (port 0: any free port, logged); without -S, serve one
                     session on the Unix socket on stdin
  -f                 ignore the client's arguments: run exactly the program
  -E                 ignore the client's environment entries
  -e KEY=VALUE       set an environment entry for the program (repeatable)
  -o user[:group]    owner of a Unix socket (names or numbers; :group alone)
  -m mode            octal permissions of a Unix socket (default 0770)
  --allow-unsafe-directory
                     listen in a directory that another user owns or that
                     group or others may write (not sticky); refused otherwise
  -h                 show this help

tls:// (all three needed; only clients whose certificate the CA signed get in):
  --tls-cert F       this daemon's certificate chain (PEM)
  --tls-key F        its private key (PEM)
  --tls-client-ca F  the CA certificate that signs the clients' certificates

A tcp:// endpoint has no access control: whoever reaches the port holds the
capability (a warning says so). Use tls:// or a Unix socket beyond loopback.

limits (a peer: a uid on a Unix socket, an address on tcp://, a client
certificate on tls://, a context id on vsock://; a client past a limit is
refused at once with a line that names it):
  --max-sessions N         connections served at once (default 256)
  --max-sessions-per-peer N  of those, from one peer (default 128)
  --max-handshakes N       connections that have not sent End yet (default 64)
  --max-handshakes-per-peer N  of those, from one peer (default 32)
  --handshake-timeout S    seconds a client has to send its request (default 10)
  --max-items N            arguments plus environment entries (default 65536)
  --max-bytes N            bytes a client may send before End, whatever the
                           messages (default 4194304); a message announcing
                           more than is left is refused unread. Memory held by
                           unfinished handshakes stays below about max-handshakes
                           x (1.5 x max-bytes + 96 x max-items + 1 MiB)
  --hangup-grace S         seconds between SIGHUP and SIGKILL when a client
                           leaves or the daemon stops (default 2)

limits of the multiplexed channel (tcp://, tls://, vsock://):
  --max-frame N            bytes a frame may announce; a larger one ends the
                           session as a protocol error (default 16777224,
                           at least 262144: capsudo's data frames)
  --stream-buffer N        bytes buffered per stream before the daemon stops
                           reading the connection (default 262144)
"""

SHORT = {"S": True, "f": False, "E": False, "e": True, "o": True, "m": True, "h": False}
LONG = {
    "help": False,
    "allow-unsafe-directory": False,
    "max-sessions": True,
    "max-sessions-per-peer": True,
    "max-handshakes": True,
    "max-handshakes-per-peer": True,
    "handshake-timeout": True,
    "max-items": True,
    "max-bytes": True,
    "hangup-grace": True,
    "tls-cert": True,
    "tls-key": True,
    "tls-client-ca": True,
    "max-frame": True,
    "stream-buffer": True,
}
CHANNEL_LIMITS = {"--max-frame": "max_frame_payload", "--stream-buffer": "stream_buffer_limit"}
CONNECTION_LIMITS = {
    "--max-sessions": "max_sessions",
    "--max-sessions-per-peer": "max_sessions_per_peer",
    "--max-handshakes": "max_handshakes",
    "--max-handshakes-per-peer": "max_handshakes_per_peer",
}

TLS_FLAGS = ("--tls-cert", "--tls-key", "--tls-client-ca")


@dataclass
class DaemonConfig:
    endpoint: object = None  # a capsudo.transport Endpoint
    owner: object = None
    tls: object = None  # TlsOptions, for tls:// only
    channel_options: dict = field(default_factory=dict)  # MuxChannel limits
    mode: int = 0o770
    allow_unsafe_directory: bool = False
    policy: Policy = field(default_factory=Policy)
    limits: SessionLimits = field(default_factory=SessionLimits)
    connections: ConnectionLimits = field(default_factory=ConnectionLimits)


def _endpoint_and_tls(text: str, tls_paths: dict[str, str], socket_options: list[str]):
    from capsudo.transport import TlsEndpoint, TlsOptions, UnixEndpoint, parse_endpoint

    try:
        endpoint = parse_endpoint(text)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if socket_options and not isinstance(endpoint, UnixEndpoint):
        raise UsageError(f"{socket_options[0]} applies only to a Unix socket, not to {endpoint}")
    if not isinstance(endpoint, TlsEndpoint):
        if tls_paths:
            raise UsageError(f"{next(iter(tls_paths))} applies only to a tls:// endpoint")
        return endpoint, None
    missing = [flag for flag in TLS_FLAGS if flag not in tls_paths]
    if missing:
        raise UsageError(f"{endpoint} needs {', '.join(missing)}")
    return endpoint, TlsOptions(tls_paths["--tls-cert"], tls_paths["--tls-key"], tls_paths["--tls-client-ca"])


def parse_command_line(argv: list[str]) -> DaemonConfig | None:
    from capsudo.transport import parse_mode, parse_owner

    options, program = parse_options(argv, SHORT, LONG)
    config = DaemonConfig()
    fixed_arguments = fixed_environment = False
    environment: dict[str, str] = {}
    limits: dict[str, float] = {}
    connections: dict[str, int] = {}
    tls_paths: dict[str, str] = {}
    socket_options: list[str] = []
    for name, value in options:
        if name in ("-h", "--help"):
            return None
        if name == "-S":
            config.endpoint = value
        elif name in TLS_FLAGS:
            tls_paths[name] = value
        elif name in CHANNEL_LIMITS:
            from capsudo.proto import DATA_FRAME_SIZE

            # A cap below our own data frames would refuse our own clients' input.
            minimum = DATA_FRAME_SIZE if name == "--max-frame" else 1
            config.channel_options[CHANNEL_LIMITS[name]] = number_option(name, value, minimum=minimum)
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
            socket_options.append(name)
            try:
                if name == "-o":
                    config.owner = parse_owner(value)
                else:
                    config.mode = parse_mode(value)
            except ValueError as exc:
                raise UsageError(str(exc)) from None
        elif name in CONNECTION_LIMITS:
            connections[CONNECTION_LIMITS[name]] = number_option(name, value, minimum=1)
        elif name == "--allow-unsafe-directory":
            socket_options.append(name)
            config.allow_unsafe_directory = True
        elif name == "--handshake-timeout":
            limits["handshake_timeout"] = number_option(name, value, float, minimum=0.001)
        elif name == "--max-items":
            limits["max_items"] = number_option(name, value, minimum=1)
        elif name == "--max-bytes":
            limits["max_bytes"] = number_option(name, value, minimum=1)
        elif name == "--hangup-grace":
            limits["hangup_grace"] = number_option(name, value, float)
    channel_flags = [flag for flag, key in CHANNEL_LIMITS.items() if key in config.channel_options]
    if config.endpoint is not None:
        config.endpoint, config.tls = _endpoint_and_tls(config.endpoint, tls_paths, socket_options)
        from capsudo.transport import UnixEndpoint

        if channel_flags and isinstance(config.endpoint, UnixEndpoint):
            raise UsageError(f"{channel_flags[0]} applies only to tcp://, tls:// and vsock:// endpoints")
    elif tls_paths or socket_options or channel_flags:
        raise UsageError(f"{(list(tls_paths) + socket_options + channel_flags)[0]} needs -S")
    config.policy = Policy(tuple(program), fixed_arguments, fixed_environment, environment)
    config.limits = SessionLimits(**limits)
    config.connections = ConnectionLimits(**connections)
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

    from capsudo.core import hold_stop_signals

    from ._server import ServerSettings, log, serve_listener, serve_without_endpoint

    settings = ServerSettings(config.policy, config.limits, config.connections)
    if (unpinned := config.policy.unpinned_environment_warning()) is not None:
        log(f"warning: {unpinned}")
    if config.endpoint is None:
        return serve_without_endpoint(settings)

    from capsudo.transport import EndpointError, open_listener

    async def listen_and_serve() -> int:
        try:
            listener = await open_listener(
                config.endpoint,
                tls=config.tls,
                owner=config.owner,
                mode=config.mode,
                allow_unsafe_directory=config.allow_unsafe_directory,
                handshake_timeout=config.limits.handshake_timeout,
                # A refused TLS client is one line in the log; the others go on.
                on_handshake_error=lambda error: log(str(error)),
                **config.channel_options,
            )
        except EndpointError as exc:
            log(str(exc))
            return 1
        warning = getattr(listener, "warning", None)
        if warning:
            log(f"warning: {warning}")
        where = _bound_address(config.endpoint, listener)
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
