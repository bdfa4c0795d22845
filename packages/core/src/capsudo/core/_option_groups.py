"""The options the commands share, in groups, and the daemon's table made of them.

Each command's table is a list of these groups plus its own options; a
group's defaults are read from where the limit lives (SessionLimits,
ConnectionLimits, ChannelLimits), so no number is written twice. The TLS
options mean the same in every command: this side's certificate, its key,
and the CA that must have signed the other side's. The groups the client
uses import nothing, for its start-up time; the others import their
defaults when they are built.
"""

from __future__ import annotations

from ._option_table import BYTES, FLAG, INTEGER, LIST, SECONDS, TEXT, Option

TLS_SECTION = "TLS (tls:// endpoints)"
LIMITS_SECTION = "limits"
CHANNEL_SECTION = "limits of the multiplexed channel (tcp://, tls://, vsock://)"


def endpoint_option(help: str, **changes) -> Option:
    return Option("endpoint", TEXT, None, help, short="S", metavar="ENDPOINT", **changes)


def tls_options(prefix: str = "", section: str = TLS_SECTION, defaults: tuple = (None, None, None),
                aliases: bool = False) -> list[Option]:
    """--tls-cert, --tls-key, --tls-ca (or --PREFIXtls-…), meaning the same in every command."""
    cert, key, ca = defaults
    return [
        Option(f"{prefix}tls-cert", TEXT, None, "this side's certificate chain (PEM): a listener's server "
               "certificate, a connector's client certificate", metavar="FILE", section=section,
               default_text=cert),
        Option(f"{prefix}tls-key", TEXT, None, "the private key of that certificate (PEM)", metavar="FILE",
               section=section, default_text=key),
        Option(f"{prefix}tls-ca", TEXT, None, "the CA certificate that must have signed the other side's: for "
               "a listener, the clients' certificates (only those get in); for a connector, the server's",
               metavar="FILE", section=section, default_text=ca,
               aliases=(f"{prefix}tls-client-ca",) if aliases else ()),
    ]


def socket_options(what: str = "a Unix socket") -> list[Option]:
    from capsudo.transport import DEFAULT_MODE

    return [
        Option("owner", TEXT, None, f"owner of {what} (names or numbers; :group alone)", short="o",
               metavar="USER[:GROUP]"),
        Option("mode", TEXT, DEFAULT_MODE, f"octal permissions of {what}", short="m", metavar="MODE",
               default_text=f"0{DEFAULT_MODE:o}"),
        Option("allow-unsafe-directory", FLAG, False, f"put {what} in a directory that another user owns or "
               "that group or others may write (not sticky); refused otherwise"),
    ]


def pin_options() -> list[Option]:
    return [
        Option("fixed-arguments", FLAG, False, "ignore the client's arguments: run exactly the program", short="f"),
        Option("fixed-environment", FLAG, False, "ignore the client's environment entries", short="E"),
        Option("refuse-dropped", FLAG, False, "refuse a request with arguments or environment entries that -f, -E "
               "or a pinned entry would drop, instead of running without them"),
        Option("env", LIST, (), "set an environment entry for the program (repeatable)", short="e",
               metavar="KEY=VALUE"),
    ]


def connection_limit_options() -> list[Option]:
    from ._limits import ConnectionLimits as limits

    section = LIMITS_SECTION
    return [
        Option("max-sessions", INTEGER, limits.max_sessions, "connections served at once", minimum=1,
               section=section),
        Option("max-sessions-per-peer", INTEGER, limits.max_sessions_per_peer, "of those, from one peer",
               minimum=1, section=section),
        Option("max-handshakes", INTEGER, limits.max_handshakes, "connections that have not sent End yet",
               minimum=1, section=section),
        Option("max-handshakes-per-peer", INTEGER, limits.max_handshakes_per_peer, "of those, from one peer",
               minimum=1, section=section),
    ]


def handshake_timeout_option() -> Option:
    from ._limits import SessionLimits

    return Option("handshake-timeout", SECONDS, SessionLimits.handshake_timeout,
                  "time a client has to send its request", minimum=0.001, section=LIMITS_SECTION)


def handshake_limit_options() -> list[Option]:
    from ._limits import SessionLimits as limits

    section = LIMITS_SECTION
    return [
        handshake_timeout_option(),
        Option("max-items", INTEGER, limits.max_items, "arguments plus environment entries a request may carry",
               minimum=1, section=section),
        Option("max-bytes", BYTES, limits.max_bytes, "bytes a client may send before End, whatever the "
               "messages; a message announcing more than is left is refused unread", minimum=1, section=section),
    ]


def hangup_grace_option() -> Option:
    from ._limits import SessionLimits

    return Option("hangup-grace", SECONDS, SessionLimits.hangup_grace, "time between SIGHUP and SIGKILL when a "
                  "client leaves or the daemon stops", section=LIMITS_SECTION)


def channel_limit_options() -> list[Option]:
    from capsudo.proto import DATA_FRAME_SIZE
    from capsudo.transport import ChannelLimits as limits

    return [
        # A cap below our own data frames would refuse our own clients' input.
        Option("max-frame", BYTES, limits.max_frame_payload, "bytes a frame may announce; a larger one ends the "
               f"session as a protocol error (at least {DATA_FRAME_SIZE}: capsudo's data frames)",
               minimum=DATA_FRAME_SIZE, section=CHANNEL_SECTION),
        Option("stream-buffer", BYTES, limits.stream_buffer_limit, "bytes buffered per stream before the "
               "daemon stops reading the connection", minimum=1, section=CHANNEL_SECTION),
    ]


LIFETIME_SECTION = "lifetime"


def lifetime_options() -> list[Option]:
    section = LIFETIME_SECTION
    return [
        Option("expires", TEXT, None, "stop accepting at this time (RFC 3339, 2026-12-31T00:00:00Z) or after this "
               "long from the start (30m); the socket goes and a client still connected is told so",
               metavar="TIME|DURATION", section=section, default_text="never"),
        Option("uses", INTEGER, None, "sessions it may run; then it stops accepting as at expiry, and the last "
               "ones finish", minimum=1, metavar="N", section=section, default_text="no limit"),
        Option("at-expiry", TEXT, "hang-up", "what programs still running at the expiry get: hang-up (SIGHUP, "
               "SIGKILL after the grace) or finish", metavar="hang-up|finish", section=section),
    ]


RUN_AS_SECTION = "the program's user, limits and audit"


def run_as_options() -> list[Option]:
    section = RUN_AS_SECTION
    return [
        Option("user", TEXT, None, "run the program as this user (a name or a number), with its HOME, USER, "
               "LOGNAME and SHELL unless -e pins them", short="u", metavar="USER", section=section,
               default_text="the daemon's"),
        Option("group", TEXT, None, "and this group", short="g", metavar="GROUP", section=section,
               default_text="the user's primary group"),
        Option("groups", LIST, None, "supplementary groups (repeatable; --groups '' for none)", metavar="GROUP",
               section=section, default_text="the user's own"),
        Option("directory", TEXT, None, "the program's working directory, entered as its user", short="D",
               metavar="DIR", section=section, default_text="the daemon's"),
        Option("umask", TEXT, None, "the program's umask (octal)", metavar="MODE", section=section,
               default_text="the daemon's"),
        Option("timeout", SECONDS, None, "the program's wall-clock time: SIGTERM at its end, SIGKILL after the "
               "hang-up grace", minimum=0.001, section=section, default_text="none"),
        Option("limit", LIST, (), "NAME=VALUE (repeatable): a resource limit (nofile, nproc, cpu, as, core, "
               "fsize, data, stack, memlock) or a limit of the session's cgroup (memory, tasks); sizes as 64K, 1G",
               metavar="NAME=VALUE", section=section),
        Option("audit", LIST, (), "a JSON record per event of every session to this file, or to syslog or journal "
               "(repeatable)", metavar="FILE", section=section),
    ]


DESCRIBE_SECTION = "what the endpoint tells a client that asks (capsudo -l)"


def description_options() -> list[Option]:
    section = DESCRIBE_SECTION
    return [
        Option("description", TEXT, "", "what the endpoint is for, in a sentence", metavar="TEXT", section=section,
               default_text="none"),
        Option("describe", TEXT, "full", "full: its name, description, pins, environment names and program; "
               "name: its name and description only", metavar="full|name", section=section),
    ]


APPROVAL_SECTION = "approval"
#: How long a request waits for a person's decision before it is denied.
DEFAULT_APPROVAL_TIMEOUT = 60.0


def approval_options() -> list[Option]:
    section = APPROVAL_SECTION
    return [
        Option("approve", FLAG, False, "hold each session after its request until a member of the approver "
               "group approves it (capsudoctl watch, approve, deny); needs --config with a [control] table",
               section=section),
        Option("approval-timeout", SECONDS, DEFAULT_APPROVAL_TIMEOUT, "a request nobody decided within this "
               "long is denied; the program's own runtime does not count", minimum=0.001, section=section),
        Option("approvers", TEXT, "root", "the group whose members may decide (root always may)",
               metavar="GROUP", section=section),
    ]


def daemon_options() -> list[Option]:
    """capsudod's table: every field of an endpoint's configuration, in -h order."""
    return [
        endpoint_option("listen here: a Unix socket (a path or unix:///path), tcp://HOST:PORT, tls://HOST:PORT "
                        "or vsock://CID:PORT (port 0: any free port, logged); without -S, serve one session on "
                        "the Unix socket on stdin"),
        *pin_options(),
        *socket_options(),
        *tls_options(aliases=True),
        *connection_limit_options(),
        *handshake_limit_options(),
        hangup_grace_option(),
        *channel_limit_options(),
        *run_as_options(),
        *lifetime_options(),
        *description_options(),
        *approval_options(),
    ]


#: What a configuration file gives as a list where the command line has operands.
PROGRAM_FIELD = "program"


def config_fields() -> tuple[str, ...]:
    """The field names an endpoint's configuration takes, for a file reader to check against."""
    return (*(option.name for option in daemon_options()), PROGRAM_FIELD)

