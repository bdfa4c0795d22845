"""Moving control messages and descriptors between a client and a daemon.

Unix sockets carry real descriptors (SCM_RIGHTS) and vouch for the peer;
byte channels simulate descriptor passing. Names load on first use, so the
one-shot client's blocking Unix path never imports trio.
"""

from __future__ import annotations

# Neither importlib nor typing: every `capsudo` command imports this
# package at start-up, and those two would add milliseconds to it.
TYPE_CHECKING = False

__all__ = [
    "MessageChannel",
    "Received",
    "close_fds",
    "PeerCredentials",
    "peer_credentials",
    "Owner",
    "parse_owner",
    "parse_mode",
    "DEFAULT_MODE",
    "UnixChannel",
    "connect_unix",
    "SESSION_ADDRESS",
    "is_session_id",
    "UnixListener",
    "open_unix_listener",
    "EndpointError",
    "BlockingUnixConnection",
    "Link",
    "dial",
    "private_access",
    # the multiplexed byte channel
    "MuxChannel",
    "MuxConnection",
    "MuxStream",
    "DEFAULT_STREAM_BUFFER",
    "ChannelLimits",
    "DEFAULT_EXIT_GRACE",
    "SESSION_DIRECTIONS",
    "default_directions",
    "DescriptorView",
    "SocketView",
    "open_view",
    # endpoints
    "Endpoint",
    "UnixEndpoint",
    "TcpEndpoint",
    "TlsEndpoint",
    "VsockEndpoint",
    "SshEndpoint",
    "SshChannel",
    "ssh_command_line",
    "parse_endpoint",
    "connect_endpoint",
    "open_listener",
    "Listener",
    "NetworkListener",
    "TlsListener",
    "exposure_warning",
    "TlsOptions",
    "TlsHandshakeError",
    "describe_tls_failure",
    "find_ssl_error",
    # systemd
    "ActivatedSockets",
    "ActivationError",
    "activated_sockets",
    "adopt_listener",
    "notify",
    "notify_ready",
    "notify_reloading",
    "notify_stopping",
    "notify_status",
    "unix_connect_failure",
    "errno_reason",
]

_HOME = {
    "MessageChannel": "._channel",
    "Received": "._channel",
    "close_fds": "._channel",
    "PeerCredentials": "._credentials",
    "peer_credentials": "._credentials",
    "Owner": "._owner",
    "parse_owner": "._owner",
    "parse_mode": "._owner",
    "DEFAULT_MODE": "._owner",
    "UnixChannel": "._unix",
    "connect_unix": "._unix",
    "SESSION_ADDRESS": "._unix",
    "is_session_id": "._unix",
    "UnixListener": "._listener",
    "open_unix_listener": "._listener",
    "EndpointError": "._errors",
    "BlockingUnixConnection": "._blocking_unix",
    "Link": "._dial",
    "dial": "._dial",
    "private_access": "._private_access",
    "MuxConnection": "._mux",
    "MuxStream": "._mux",
    "DEFAULT_STREAM_BUFFER": "._channel_limits",
    "ChannelLimits": "._channel_limits",
    "MuxChannel": "._mux_channel",
    "DEFAULT_EXIT_GRACE": "._mux_channel",
    "SESSION_DIRECTIONS": "._mux_channel",
    "default_directions": "._mux_channel",
    "DescriptorView": "._fdstream",
    "SocketView": "._fdstream",
    "open_view": "._fdstream",
    **dict.fromkeys(
        ["Endpoint", "UnixEndpoint", "TcpEndpoint", "TlsEndpoint", "VsockEndpoint", "SshEndpoint", "parse_endpoint"],
        "._address",
    ),
    "connect_endpoint": "._connect",
    "unix_connect_failure": "._connect_failure",
    "errno_reason": "._connect_failure",
    **dict.fromkeys(["open_listener", "Listener", "NetworkListener", "TlsListener", "exposure_warning"], "._listen"),
    "TlsOptions": "._tls",
    "TlsHandshakeError": "._tls",
    "describe_tls_failure": "._tls",
    "find_ssl_error": "._tls",
    "SshChannel": "._ssh",
    "ssh_command_line": "._ssh",
    **dict.fromkeys(["ActivatedSockets", "ActivationError", "activated_sockets", "adopt_listener"], "._activation"),
    **dict.fromkeys(["notify", "notify_ready", "notify_reloading", "notify_stopping", "notify_status"], "._notify"),
}


from capsudo.proto._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, _HOME, __all__)


if TYPE_CHECKING:
    from ._activation import ActivatedSockets, ActivationError, activated_sockets, adopt_listener
    from ._notify import notify, notify_ready, notify_reloading, notify_status, notify_stopping
    from ._blocking_unix import BlockingUnixConnection
    from ._channel import MessageChannel, Received, close_fds
    from ._credentials import PeerCredentials, peer_credentials
    from ._address import (Endpoint, SshEndpoint, TcpEndpoint, TlsEndpoint, UnixEndpoint, VsockEndpoint,
                           parse_endpoint)
    from ._connect import connect_endpoint
    from ._dial import Link, dial
    from ._private_access import private_access
    from ._connect_failure import errno_reason, unix_connect_failure
    from ._listen import Listener, NetworkListener, TlsListener, exposure_warning, open_listener
    from ._fdstream import DescriptorView, SocketView, open_view
    from ._errors import EndpointError
    from ._listener import UnixListener, open_unix_listener
    from ._channel_limits import DEFAULT_STREAM_BUFFER, ChannelLimits
    from ._mux import MuxConnection, MuxStream
    from ._mux_channel import DEFAULT_EXIT_GRACE, SESSION_DIRECTIONS, MuxChannel, default_directions
    from ._ssh import SshChannel, ssh_command_line
    from ._owner import DEFAULT_MODE, Owner, parse_mode, parse_owner
    from ._tls import TlsHandshakeError, TlsOptions, describe_tls_failure, find_ssl_error
    from ._unix import SESSION_ADDRESS, UnixChannel, connect_unix, is_session_id
