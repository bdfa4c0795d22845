"""Reaching an endpoint: a UnixChannel for a Unix socket, a dialing MuxChannel for the rest."""

from __future__ import annotations

import trio

from ._address import Endpoint, SshEndpoint, TlsEndpoint, UnixEndpoint, VsockEndpoint, as_endpoint, bracket
from ._channel import MessageChannel
from ._connect_failure import errno_reason, unix_connect_failure
from ._dial import DEFAULT_HANDSHAKE_TIMEOUT, refuse_undialable
from ._errors import EndpointError
from ._mux_channel import MuxChannel
from ._tls import TlsHandshakeError, TlsOptions, describe_tls_failure
from ._unix import connect_unix
from ._vsock import connect_vsock


async def fail_handshake(ssl_stream: trio.SSLStream) -> None:
    """Close a stream whose handshake failed, telling the peer why.

    OpenSSL queues an alert (certificate required, unknown CA) when a
    handshake fails, but trio raises before sending it, and without it the
    peer only sees the connection drop. So the alert is sent here; trio
    keeps it in a private buffer, which is tolerated missing.
    """
    outgoing = getattr(ssl_stream, "_outgoing", None)
    try:
        alert = outgoing.read() if outgoing is not None else b""
        if alert:
            with trio.move_on_after(1.0):
                await ssl_stream.transport_stream.send_all(alert)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, AttributeError):
        pass
    finally:
        await trio.aclose_forcefully(ssl_stream)


async def connect_endpoint(
    endpoint: Endpoint | str,
    tls: TlsOptions | None = None,
    *,
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    session_id: str | None = None,
    **channel_options,
) -> MessageChannel:
    """A channel to `endpoint`: a UnixChannel, or a dialing MuxChannel.

    `tls` is needed for tls:// and ignored elsewhere. `channel_options` go
    to MuxChannel (exit_grace, stream_buffer_limit, …). `session_id` is
    the id a front-end's session goes by, which a Unix socket's daemon can
    read from our address; other transports do not carry it. Every failure is an
    EndpointError with one line that names the endpoint; a refused TLS
    handshake is its subclass TlsHandshakeError.
    """
    endpoint = as_endpoint(endpoint)
    if isinstance(endpoint, UnixEndpoint):
        try:
            return await connect_unix(endpoint.path, session_id=session_id)
        except OSError as exc:
            raise EndpointError(unix_connect_failure(endpoint.path, exc)) from None
    if isinstance(endpoint, SshEndpoint):
        from ._ssh import connect_ssh

        return await connect_ssh(endpoint, **channel_options)
    if isinstance(endpoint, VsockEndpoint):
        stream = await connect_vsock(endpoint.cid, endpoint.port, str(endpoint))
        return MuxChannel(stream, "dialing", description=f"vsock {endpoint.cid}:{endpoint.port}", **channel_options)
    refuse_undialable(endpoint, tls)
    context = tls.client_context() if isinstance(endpoint, TlsEndpoint) and tls is not None else None
    try:
        stream = await trio.open_tcp_stream(endpoint.host, endpoint.port)
    except OSError as exc:
        raise EndpointError(f"cannot connect to {endpoint}: {errno_reason(exc)}") from None
    if context is None:
        return MuxChannel(stream, "dialing", description=f"tcp {bracket(endpoint.host)}:{endpoint.port}", **channel_options)
    ssl_stream = trio.SSLStream(stream, context, server_hostname=endpoint.host, https_compatible=False)
    try:
        with trio.fail_after(handshake_timeout):
            await ssl_stream.do_handshake()
    except trio.TooSlowError:
        await fail_handshake(ssl_stream)
        raise TlsHandshakeError(f"TLS handshake with {endpoint} failed: no answer within {handshake_timeout:g} s") from None
    except trio.BrokenResourceError as exc:
        await fail_handshake(ssl_stream)
        reason = describe_tls_failure(exc, server_side=False)
        raise TlsHandshakeError(f"TLS handshake with {endpoint} failed: {reason}") from None
    return MuxChannel(ssl_stream, "dialing", description=f"tls {bracket(endpoint.host)}:{endpoint.port}", **channel_options)
