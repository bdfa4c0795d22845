"""Sessions: the client's side and the daemon's side, over any transport.

Attenuation (what an endpoint allows), who the program runs as and its
limits, spawning, the daemon-side pty, exit
status and the session log. Names load on first use, so the one-shot client
on a Unix socket imports neither trio nor construct.
"""

from __future__ import annotations

# Neither importlib nor typing: every `capsudo` command imports this
# package at start-up, and those two would add milliseconds to it.
TYPE_CHECKING = False

__all__ = [
    # the audit trail
    "AuditFile",
    "parse_or_status",
    "AuditFiles",
    "audit_record",
    "control_record",
    "run_as_options",
    "RUN_AS_SECTION",
    "UsageError",
    "parse_options",
    # option tables and the configuration of an endpoint
    "FLAG",
    "TEXT",
    "LIST",
    "INTEGER",
    "SECONDS",
    "BYTES",
    "Option",
    "read_command_line",
    "command_line_status",
    "usage_error",
    "usage_text",
    "convert",
    "Labels",
    "endpoint_option",
    "tls_options",
    "socket_options",
    "pin_options",
    "connection_limit_options",
    "handshake_limit_options",
    "handshake_timeout_option",
    "hangup_grace_option",
    "channel_limit_options",
    "approval_options",
    "daemon_options",
    "config_fields",
    "TLS_SECTION",
    "LIMITS_SECTION",
    "CHANNEL_SECTION",
    "EndpointConfig",
    "Lifetime",
    "expired_reason",
    "spent_reason",
    "revoked_reason",
    "rfc3339",
    "lifetime_options",
    "build_config",
    "Policy",
    "RunAs",
    "ProgramLimits",
    "PolicyError",
    "CALLER_ENTRIES",
    "attenuate",
    "resolve_program",
    "SAFE_PATH",
    "SessionLimits",
    "ConnectionLimits",
    "ClientError",
    "ClientRequest",
    "build_request",
    "default_endpoint",
    "DEFAULT_ENDPOINT",
    "forwarded_environment",
    "FORWARDED_VARIABLES",
    "NOTE_PREFIX",
    "SessionResult",
    "run_unix_session",
    "run_endpoint_session",
    "run_lean_channel_session",
    "run",
    "run_async",
    "describe",
    "describe_async",
    "CompletedSession",
    "SessionFailed",
    "DEFAULT_MAX_OUTPUT",
    "TlsOptions",
    "EndpointInfo",
    "NotDescribed",
    "NOT_DESCRIBED_STATUS",
    "EndpointDescription",
    "description_fields",
    "description_options",
    "serve_session",
    "Hangup",
    # serving endpoints
    "serve",
    "ServedEndpoint",
    "stop_on_signals",
    "hold_stop_signals",
    "STOP_SIGNALS",
    "AcceptBackoff",
    "Logger",
    # the terminal and the password prompt, for the command line
    "ask_secret",
    "Interrupted",
    "read_request",
    "daemon_protocol",
    "Request",
    # the decision seam
    "Asked",
    "Allow",
    "Refuse",
    "Held",
    "Decision",
    "attenuating",
    # session events
    "Accepted",
    "Requested",
    "Decided",
    "Pending",
    "Started",
    "Ended",
    "SessionEvent",
    "EventSink",
    "SessionRecord",
    "new_session_id",
]

_HOME = {
    "UsageError": "._options",
    "parse_options": "._options",
    **dict.fromkeys(['FLAG', 'TEXT', 'LIST', 'INTEGER', 'SECONDS', 'BYTES'] + ['Option', 'read_command_line', 'command_line_status', 'usage_error', 'usage_text', 'convert', 'Labels', 'parse_or_status'], "._option_table"),
    **dict.fromkeys(['endpoint_option', 'tls_options', 'socket_options', 'pin_options', 'connection_limit_options', 'handshake_limit_options', 'handshake_timeout_option', 'hangup_grace_option', 'channel_limit_options', 'approval_options', 'daemon_options', 'config_fields', 'TLS_SECTION', 'LIMITS_SECTION', 'CHANNEL_SECTION'], "._option_groups"),
    **dict.fromkeys(['EndpointConfig', 'build_config'], "._endpoint_config"),
    **dict.fromkeys(['Lifetime', 'expired_reason', 'spent_reason', 'revoked_reason', 'rfc3339'], "._lifetime"),
    **dict.fromkeys(["AuditFile", "AuditFiles", "audit_record", "control_record"], "._audit"),
    **dict.fromkeys(["run_as_options", "RUN_AS_SECTION", "lifetime_options"], "._option_groups"),
    "Policy": "._policy",
    "RunAs": "._run_as",
    "CALLER_ENTRIES": "._run_as",
    "ProgramLimits": "._program_limits",
    "PolicyError": "._policy_error",
    "attenuate": "._policy",
    "resolve_program": "._policy",
    "SAFE_PATH": "._policy",
    "SessionLimits": "._limits",
    "ConnectionLimits": "._limits",
    "ClientError": "._client_request",
    "ClientRequest": "._client_request",
    "build_request": "._client_request",
    "default_endpoint": "._client_request",
    "DEFAULT_ENDPOINT": "._client_request",
    "forwarded_environment": "._client_request",
    "FORWARDED_VARIABLES": "._client_request",
    "NOTE_PREFIX": "._client_request",
    "SessionResult": "._unix_client",
    "run_unix_session": "._unix_client",
    "run_endpoint_session": "._channel_client",
    "run_lean_channel_session": "._lean_channel_client",
    **dict.fromkeys(["run", "run_async", "describe", "describe_async", "CompletedSession", "SessionFailed",
                     "DEFAULT_MAX_OUTPUT"], "._library"),
    "TlsOptions": "._tls",
    **dict.fromkeys(["EndpointInfo", "NotDescribed", "NOT_DESCRIBED_STATUS"], "._describe_client"),
    **dict.fromkeys(["EndpointDescription", "description_fields"], "._description"),
    "description_options": "._option_groups",
    "serve_session": "._daemon_session",
    **dict.fromkeys(["serve", "ServedEndpoint", "stop_on_signals", "hold_stop_signals", "STOP_SIGNALS", "AcceptBackoff", "Logger"],
                    "._serving"),
    "ask_secret": "._secret_prompt",
    "Interrupted": "._fatal_signals",
    "Hangup": "._daemon_session",
    **dict.fromkeys(["read_request", "daemon_protocol", "Request"], "._handshake"),
    **dict.fromkeys(["Asked", "Allow", "Refuse", "Held", "Decision", "attenuating"], "._decision"),
    **dict.fromkeys(
        ["Accepted", "Requested", "Decided", "Pending", "Started", "Ended", "SessionEvent", "EventSink",
         "SessionRecord", "new_session_id"],
        "._events",
    ),
}


from capsudo.proto._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, _HOME, __all__)


if TYPE_CHECKING:
    from ._client_request import (DEFAULT_ENDPOINT, FORWARDED_VARIABLES, NOTE_PREFIX, ClientError, ClientRequest, build_request,
                                  default_endpoint, forwarded_environment)
    from ._channel_client import run_endpoint_session
    from ._lean_channel_client import run_lean_channel_session
    from ._daemon_session import Hangup, serve_session
    from ._secret_prompt import ask_secret
    from ._serving import STOP_SIGNALS, AcceptBackoff, Logger, ServedEndpoint, hold_stop_signals, serve, stop_on_signals
    from ._fatal_signals import Interrupted
    from ._decision import Allow, Asked, Decision, Held, Refuse, attenuating
    from ._events import (Accepted, Decided, Ended, EventSink, Pending, Requested, SessionEvent, SessionRecord,
                          Started, new_session_id)
    from ._handshake import Request, daemon_protocol, read_request
    from ._library import (DEFAULT_MAX_OUTPUT, CompletedSession, SessionFailed, describe, describe_async, run,
                           run_async)
    from ._tls import TlsOptions
    from ._describe_client import NOT_DESCRIBED_STATUS, EndpointInfo, NotDescribed
    from ._description import EndpointDescription, description_fields
    from ._option_groups import description_options
    from ._limits import ConnectionLimits, SessionLimits
    from ._options import UsageError, parse_options
    from ._option_table import BYTES, FLAG, INTEGER, LIST, SECONDS, TEXT, Labels, Option, command_line_status, convert, parse_or_status, read_command_line, usage_error, usage_text
    from ._option_groups import (CHANNEL_SECTION, LIMITS_SECTION, TLS_SECTION, approval_options, channel_limit_options, config_fields, connection_limit_options, daemon_options,
                                 endpoint_option, handshake_limit_options, handshake_timeout_option,
                                 hangup_grace_option, pin_options, socket_options, tls_options)
    from ._endpoint_config import EndpointConfig, build_config
    from ._lifetime import Lifetime, expired_reason, revoked_reason, rfc3339, spent_reason
    from ._audit import AuditFile, AuditFiles, audit_record, control_record
    from ._option_groups import RUN_AS_SECTION, lifetime_options, run_as_options
    from ._policy import SAFE_PATH, Policy, attenuate, resolve_program
    from ._policy_error import PolicyError
    from ._program_limits import ProgramLimits
    from ._run_as import CALLER_ENTRIES, RunAs
    from ._unix_client import SessionResult, run_unix_session
