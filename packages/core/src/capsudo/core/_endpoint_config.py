"""One endpoint's configuration, typed, from a command line or a configuration file alike.

`build_config()` takes a mapping of field name (the long option: `endpoint`,
`max-sessions`, …) to raw value, strings from a command line or the str,
int, bool and list values of a TOML table, and gives a frozen
`EndpointConfig`, or a UsageError of one line that names the field as the
user wrote it: the flag as typed on a command line, the field name in a file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from capsudo.transport import DEFAULT_MODE, ChannelLimits, Endpoint, Owner, TlsOptions

from ._lifetime import AT_EXPIRY, Lifetime, parse_expiry
from ._limits import ConnectionLimits, SessionLimits
from ._option_groups import PROGRAM_FIELD, daemon_options
from ._option_table import BYTES, INTEGER, LIST, SECONDS, Option, UsageError, convert
from ._policy import Policy
from ._policy_error import PolicyError
from ._program_limits import ProgramLimits
from ._run_as import RunAs

_CONNECTION_FIELDS = ("max-sessions", "max-sessions-per-peer", "max-handshakes", "max-handshakes-per-peer")
_SESSION_FIELDS = ("handshake-timeout", "max-items", "max-bytes", "hangup-grace")
_CHANNEL_FIELDS = {"max-frame": "max_frame_payload", "stream-buffer": "stream_buffer_limit"}
_SOCKET_FIELDS = ("owner", "mode", "allow-unsafe-directory")
_TLS_FIELDS = ("tls-cert", "tls-key", "tls-ca")


@dataclass(frozen=True)
class EndpointConfig:
    # None: serve one session on the Unix socket on stdin.
    address: Endpoint | None = None
    tls: TlsOptions | None = None  # for tls:// only
    owner: Owner | None = None
    mode: int = DEFAULT_MODE
    allow_unsafe_directory: bool = False
    policy: Policy = field(default_factory=Policy)
    session_limits: SessionLimits = SessionLimits()
    connection_limits: ConnectionLimits = ConnectionLimits()
    channel_limits: ChannelLimits = ChannelLimits()
    #: Where each event of every session goes: files, "syslog", "journal".
    audit: tuple[str, ...] = ()
    lifetime: Lifetime = Lifetime()
    #: What the endpoint is for, told to a client that asks (capsudo -l).
    description: str = ""
    #: How much it tells: "full", or "name" (its name and description only).
    describe: str = "full"


DESCRIBE_CHOICES = ("full", "name")


def _python_name(field_name: str) -> str:
    return field_name.replace("-", "_")


def build_config(values: Mapping[str, object], labels: Mapping[str, str] | None = None,
                 table: list[Option] | None = None) -> EndpointConfig:
    """The configuration that `values` describe; fields left out take their defaults.

    `labels` names each field in messages (a command line's flags); without
    it, messages use the field names. Raises UsageError.
    """
    options = {option.name: option for option in (table or daemon_options())}
    name = (lambda key: labels[key]) if labels is not None else (lambda key: key)
    typed: dict[str, object] = {}
    for key, raw in values.items():
        if key in ("mode", "owner") and isinstance(raw, int) and not isinstance(raw, bool):
            # TOML writes a mode as 0o770 and a uid as a number.
            raw = f"0{raw:o}" if key == "mode" else str(raw)
        if key == "expires":
            typed[key] = parse_expiry(raw, name(key))
        elif key == PROGRAM_FIELD:
            typed[key] = convert(Option(PROGRAM_FIELD, LIST), raw, name(key))
        elif key in options:
            typed[key] = convert(options[key], raw, name(key))
        else:
            raise UsageError(f"unknown field {key!r}; valid fields: {', '.join([*options, PROGRAM_FIELD])}")

    environment: dict[str, str] = {}
    for entry in typed.get("env", ()):
        key, sep, entry_value = entry.partition("=")
        if not sep or not key:
            raise UsageError(f"{name('env')} takes KEY=VALUE, got {entry!r}")
        environment[key] = entry_value
    policy = Policy(tuple(typed.get(PROGRAM_FIELD, ())), bool(typed.get("fixed-arguments")),
                    bool(typed.get("fixed-environment")), environment, _run_as(typed, name),
                    _program_limits(typed, name), bool(typed.get("refuse-dropped")))
    try:
        # What this system cannot give (no such user, a limit it would not
        # enforce) is refused now, at start, rather than at every session.
        policy.validate()
    except PolicyError as exc:
        raise UsageError(str(exc)) from None
    session_limits = SessionLimits(**{_python_name(key): typed[key] for key in _SESSION_FIELDS if key in typed})
    connection_limits = ConnectionLimits(
        **{_python_name(key): typed[key] for key in _CONNECTION_FIELDS if key in typed})
    channel_limits = ChannelLimits(**{attribute: typed[key] for key, attribute in _CHANNEL_FIELDS.items()
                                      if key in typed})

    address, tls, owner, mode = _listening(typed, name)
    describe = typed.get("describe", "full")
    if describe not in DESCRIBE_CHOICES:
        raise UsageError(f"{name('describe')} takes full or name, got {describe!r}")
    return EndpointConfig(address, tls, owner, mode, bool(typed.get("allow-unsafe-directory")), policy,
                          session_limits, connection_limits, channel_limits, tuple(typed.get("audit", ())),
                          _lifetime(typed, name), str(typed.get("description", "")), describe)


def _lifetime(typed: Mapping[str, object], name) -> Lifetime:
    expires_at, expires_after = typed.get("expires", (None, None))
    at_expiry = typed.get("at-expiry", "hang-up")
    if at_expiry not in AT_EXPIRY:
        raise UsageError(f"{name('at-expiry')} takes hang-up or finish, got {at_expiry!r}")
    return Lifetime(expires_at, expires_after, typed.get("uses"), AT_EXPIRY[at_expiry])


def _run_as(typed: Mapping[str, object], name) -> RunAs:
    umask = typed.get("umask")
    if umask is not None:
        try:
            umask = int(umask, 8)
        except ValueError:
            raise UsageError(f"{name('umask')} takes an octal mode such as 022, got {umask!r}") from None
    groups = typed.get("groups")
    if groups is not None:
        groups = tuple(group for group in groups if group)  # --groups '' : none at all
    try:
        return RunAs(typed.get("user"), typed.get("group"), groups, typed.get("directory"), umask)
    except PolicyError as exc:
        raise UsageError(str(exc)) from None


# How each limit's value is written: a count, a size or a time.
_LIMIT_KINDS = {"nofile": INTEGER, "nproc": INTEGER, "tasks": INTEGER, "cpu": SECONDS}


def _program_limits(typed: Mapping[str, object], name) -> ProgramLimits:
    values: dict[str, object] = {}
    for entry in typed.get("limit", ()):
        limit, sep, raw = entry.partition("=")
        if not sep or not limit:
            raise UsageError(f"{name('limit')} takes NAME=VALUE, got {entry!r}")
        kind = _LIMIT_KINDS.get(limit, BYTES)
        value = convert(Option(limit, kind), raw, f"{name('limit')} {limit}")
        values[limit] = int(value) if kind == SECONDS else value
    try:
        return ProgramLimits.from_mapping(values, typed.get("timeout"))
    except PolicyError as exc:
        raise UsageError(f"{name('limit')}: {exc}") from None


def _listening(typed: Mapping[str, object], name):
    """The address, TLS, owner and mode, checked against each other."""
    from capsudo.transport import TlsEndpoint, UnixEndpoint, parse_endpoint, parse_mode, parse_owner

    tls_given = [key for key in _TLS_FIELDS if key in typed]
    socket_given = [key for key in _SOCKET_FIELDS if key in typed and typed[key] is not False]
    channel_given = [key for key in _CHANNEL_FIELDS if key in typed]
    try:
        owner = parse_owner(typed["owner"]) if "owner" in typed else None
        mode = parse_mode(typed["mode"]) if "mode" in typed else DEFAULT_MODE
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if "endpoint" not in typed:
        given = tls_given + socket_given + channel_given
        if given:
            raise UsageError(f"{name(given[0])} needs {name('endpoint')}")
        return None, None, owner, mode
    try:
        address = parse_endpoint(typed["endpoint"])
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if socket_given and not isinstance(address, UnixEndpoint):
        raise UsageError(f"{name(socket_given[0])} applies only to a Unix socket, not to {address}")
    if channel_given and isinstance(address, UnixEndpoint):
        raise UsageError(f"{name(channel_given[0])} applies only to tcp://, tls:// and vsock:// endpoints")
    if not isinstance(address, TlsEndpoint):
        if tls_given:
            raise UsageError(f"{name(tls_given[0])} applies only to a tls:// endpoint")
        return address, None, owner, mode
    missing = [name(key) for key in _TLS_FIELDS if key not in typed]
    if missing:
        raise UsageError(f"{address} needs {', '.join(missing)}")
    try:
        tls = TlsOptions(typed["tls-cert"], typed["tls-key"], typed["tls-ca"])
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return address, tls, owner, mode
