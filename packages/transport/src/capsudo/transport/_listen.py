"""Serving an endpoint: open_listener() and the network listeners.

A Unix endpoint gives a UnixListener; tcp:// and vsock:// a
NetworkListener, tls:// a TlsListener, each of whose accept() returns an
accepting MuxChannel.

A TLS listener does its handshakes in the background, several at once and
each within a time limit, so a client that connects and says nothing holds
up nobody. accept() returns only connections whose handshake succeeded; a
failed handshake is skipped, and its TlsHandshakeError (one line: who, and
why) goes to the listener's on_handshake_error callback, or to the log.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import socket
from collections.abc import Callable
from typing import Protocol

import trio

from ._address import (Endpoint, SshEndpoint, TcpEndpoint, TlsEndpoint, UnixEndpoint, VsockEndpoint, as_endpoint,
                       bracket)
from ._channel import MessageChannel
from ._channel_limits import ChannelLimits
from ._connect import DEFAULT_HANDSHAKE_TIMEOUT, fail_handshake
from ._connect_failure import errno_reason
from ._errors import EndpointError
from ._listener import open_unix_listener
from ._mux import _TaskGroup
from ._mux_channel import MuxChannel
from ._owner import DEFAULT_MODE, Owner
from ._tls import TlsHandshakeError, TlsOptions, describe_tls_failure
from ._vsock import listen_vsock

log = logging.getLogger("capsudo.transport.endpoints")

#: TLS handshakes a listener runs at once (and completed ones it holds for accept()).
DEFAULT_MAX_HANDSHAKES = 32


def _address_text(address) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{bracket(str(address[0]))}:{address[1]}"
    return str(address)


class Listener(Protocol):
    """What open_listener() returns: UnixListener or NetworkListener."""

    async def accept(self) -> MessageChannel: ...

    async def aclose(self) -> None: ...


def _is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def exposure_warning(endpoint: Endpoint | str, bound_host: str | None = None) -> str | None:
    """What a daemon should print about who can reach `endpoint`, or None.

    A tcp:// listener has no access control at all: on a network address
    anyone who can reach the port holds the capability, and on loopback
    every local user does. tls://, unix:// and vsock:// get None.
    """
    endpoint = as_endpoint(endpoint)
    if not isinstance(endpoint, TcpEndpoint):
        return None
    host = bound_host if bound_host is not None else endpoint.host
    if _is_loopback(host):
        return f"{endpoint} has no TLS and no access control: every local user can connect and holds the capability"
    return (
        f"{endpoint} accepts connections from the network without TLS: "
        "anyone who can reach this port holds the capability"
    )


class NetworkListener:
    """Accepts connections on a TCP or vsock endpoint as accepting MuxChannels."""

    def __init__(self, listener: trio.SocketListener, endpoint: Endpoint, *,
                 channel_limits: ChannelLimits = ChannelLimits(), nursery: trio.Nursery | None = None) -> None:
        self.endpoint = endpoint
        self._listener = listener
        self.socket = listener.socket
        #: The address the socket is bound to (its real port when 0 was asked).
        self.address = listener.socket.getsockname()
        bound_host = str(self.address[0]) if isinstance(endpoint, TcpEndpoint) else None
        #: A line for the daemon to print when anyone beyond the intended peers can connect; else None.
        self.warning = exposure_warning(endpoint, bound_host)
        #: True for a tcp:// listener on an address other machines can reach.
        self.exposed_to_network = self.warning is not None and not _is_loopback(bound_host or "")
        self.channel_limits = channel_limits
        self._nursery = nursery  # where accepted channels run their pumps

    @property
    def port(self) -> int:
        return int(self.address[1])

    def _describe(self, peer) -> str:
        return f"{self.endpoint.scheme} {_address_text(peer)}"

    def _source(self, peer) -> str | None:
        """The peer for limits per peer: its address without the port, or a vsock context id."""
        return _source_address(self.endpoint.scheme, peer)

    async def accept(self) -> MuxChannel:
        stream = await self._listener.accept()
        try:
            peer = stream.socket.getpeername()
        except OSError:
            peer = "?"
        channel = MuxChannel(stream, "accepting", description=self._describe(peer), nursery=self._nursery,
                             **self.channel_limits.channel_arguments())
        channel.source = self._source(peer)
        return channel

    async def aclose(self) -> None:
        await self._listener.aclose()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.aclose()


def _source_address(scheme: str, peer) -> str | None:
    """"tcp 192.0.2.7", "vsock 3": who a network peer is, whatever port it came from."""
    if not isinstance(peer, tuple) or not peer:
        return None
    host = str(peer[0]).split("%", 1)[0]
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return f"{scheme} {host}"
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # one host, whichever family it connected with
    return f"{scheme} {address}"


def _certificate_source(ssl_stream: trio.SSLStream) -> str | None:
    """"tls CN=alice": the verified client certificate's subject, or its fingerprint when it names nobody."""
    subject = _subject(ssl_stream.getpeercert())
    if subject != "?":
        return f"tls {subject}"
    der = ssl_stream.getpeercert(binary_form=True)
    return f"tls sha256:{hashlib.sha256(der).hexdigest()}" if der else None


def _subject(certificate: dict | None) -> str:
    """Who a verified peer certificate names: its common name, else its subject alternative names."""
    if not certificate:
        return "?"
    names = [f"CN={value}" for rdn in certificate.get("subject", ()) for key, value in rdn if key == "commonName"]
    if not names:
        names = [f"{kind}:{value}" for kind, value in certificate.get("subjectAltName", ())]
    return ",".join(names) or "?"


HandshakeErrorHandler = Callable[[TlsHandshakeError], None]


def _log_handshake_error(error: TlsHandshakeError) -> None:
    log.warning("%s", error)


class TlsListener(NetworkListener):
    """A TCP listener that hands out only clients whose certificate the CA signed.

    Handshakes run in the background, up to `max_handshakes` at once and
    each within `handshake_timeout`. accept() returns only connections whose
    handshake succeeded; one that failed or timed out is skipped and its
    TlsHandshakeError passed to `on_handshake_error` (by default, logged to
    the "capsudo.transport.endpoints" logger), so an accept loop never dies
    of one bad client.
    """

    def __init__(
        self,
        listener: trio.SocketListener,
        endpoint: TlsEndpoint,
        context,
        *,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        max_handshakes: int = DEFAULT_MAX_HANDSHAKES,
        on_handshake_error: HandshakeErrorHandler | None = None,
        nursery: trio.Nursery | None = None,
        channel_limits: ChannelLimits = ChannelLimits(),
    ) -> None:
        super().__init__(listener, endpoint, channel_limits=channel_limits, nursery=nursery)
        self.warning = None
        self.exposed_to_network = False
        self._context = context
        self.handshake_timeout = handshake_timeout
        self.on_handshake_error = on_handshake_error or _log_handshake_error
        #: How many handshakes have failed so far.
        self.handshake_failures = 0
        self._limiter = trio.CapacityLimiter(max_handshakes)
        self._ready_in, self._ready_out = trio.open_memory_channel[object](max_handshakes)
        self._tasks = _TaskGroup(nursery, lambda exc: None)
        self._running = False
        self._closed = False

    async def accept(self) -> MuxChannel:
        if self._closed:
            raise trio.ClosedResourceError("the listener is closed")
        if not self._running:
            self._running = True
            self._tasks.start_soon(self._accept_loop, name=f"TLS accept loop ({self.endpoint})")
        try:
            ssl_stream, peer = await self._ready_out.receive()
        except trio.ClosedResourceError:
            raise trio.ClosedResourceError("the listener is closed") from None
        description = f"tls {_address_text(peer)} ({_subject(ssl_stream.getpeercert())})"
        channel = MuxChannel(ssl_stream, "accepting", description=description, nursery=self._nursery,
                             **self.channel_limits.channel_arguments())
        # The certificate, not the address: one holder is one identity, wherever it connects from.
        channel.source = _certificate_source(ssl_stream)
        return channel

    async def _accept_loop(self) -> None:
        while True:
            token = object()
            await self._limiter.acquire_on_behalf_of(token)
            try:
                stream = await self._listener.accept()
            except OSError as exc:
                # Out of descriptors, typically: wait a moment instead of spinning.
                self._limiter.release_on_behalf_of(token)
                log.warning("accepting on %s failed: %s", self.endpoint, exc)
                await trio.sleep(0.1)
                continue
            except BaseException:
                self._limiter.release_on_behalf_of(token)
                raise
            self._tasks.start_soon(self._handshake, stream, token, name="TLS handshake")

    def _failed(self, error: TlsHandshakeError) -> None:
        self.handshake_failures += 1
        try:
            self.on_handshake_error(error)
        except Exception:
            log.exception("the handler of a failed TLS handshake failed")

    async def _handshake(self, stream: trio.SocketStream, token: object) -> None:
        try:
            try:
                peer = stream.socket.getpeername()
            except OSError:
                peer = "?"
            where = _address_text(peer)
            ssl_stream = trio.SSLStream(stream, self._context, server_side=True, https_compatible=False)
            try:
                with trio.fail_after(self.handshake_timeout):
                    await ssl_stream.do_handshake()
            except trio.TooSlowError:
                await fail_handshake(ssl_stream)
                self._failed(TlsHandshakeError(
                    f"TLS handshake with {where} failed: no handshake within {self.handshake_timeout:g} s"
                ))
                return
            except trio.BrokenResourceError as exc:
                await fail_handshake(ssl_stream)
                reason = describe_tls_failure(exc, server_side=True)
                self._failed(TlsHandshakeError(f"TLS handshake with {where} failed: {reason}"))
                return
            try:
                await self._ready_in.send((ssl_stream, peer))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                await trio.aclose_forcefully(ssl_stream)  # the listener closed meanwhile
            except BaseException:
                await trio.aclose_forcefully(ssl_stream)
                raise
        finally:
            self._limiter.release_on_behalf_of(token)

    async def aclose(self) -> None:
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        try:
            await self._tasks.aclose()
        finally:
            # Handshakes that completed but were never accepted.
            while True:
                try:
                    ssl_stream, _ = self._ready_out.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                    break
                await trio.aclose_forcefully(ssl_stream)
            self._ready_out.close()
            await self._listener.aclose()


async def _listen_tcp(endpoint: TcpEndpoint | TlsEndpoint, backlog: int) -> trio.SocketListener:
    try:
        infos = await trio.socket.getaddrinfo(
            endpoint.host, endpoint.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError as exc:
        raise EndpointError(f"cannot listen on {endpoint}: {errno_reason(exc)}") from None
    family, kind, proto, _, address = infos[0]
    sock = trio.socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        await sock.bind(address)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise EndpointError(f"cannot listen on {endpoint}: {errno_reason(exc)}") from None
    return trio.SocketListener(sock)


async def open_listener(
    endpoint: Endpoint | str,
    *,
    tls: TlsOptions | None = None,
    owner: Owner | None = None,
    mode: int = DEFAULT_MODE,
    backlog: int = 128,
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    on_handshake_error: HandshakeErrorHandler | None = None,
    nursery: trio.Nursery | None = None,
    allow_unsafe_directory: bool = False,
    channel_limits: ChannelLimits = ChannelLimits(),
) -> Listener:
    """A listener on `endpoint` whose accept() returns a MessageChannel.

    unix: a UnixListener (owner and mode apply; a directory other users can
    write is refused unless `allow_unsafe_directory`). tcp:, vsock: a
    NetworkListener; tls: a TlsListener, which needs `tls` with a
    certificate and key, and whose failed handshakes go to
    `on_handshake_error` (else the log) instead of out of accept(). Check
    `.warning` on a network listener (or call exposure_warning()) and print
    it. Failures to set the listener up are EndpointError.
    """
    endpoint = as_endpoint(endpoint)
    if isinstance(endpoint, UnixEndpoint):
        return await open_unix_listener(
            endpoint.path, owner=owner, mode=mode, backlog=backlog, allow_unsafe_directory=allow_unsafe_directory
        )
    if owner is not None:
        raise EndpointError(f"cannot listen on {endpoint}: an owner applies only to Unix socket endpoints")
    if isinstance(endpoint, SshEndpoint):
        raise EndpointError(f"cannot listen on {endpoint}: an ssh:// endpoint can only be connected to")
    if isinstance(endpoint, VsockEndpoint):
        listener = await listen_vsock(endpoint.cid, endpoint.port, str(endpoint), backlog)
        return NetworkListener(listener, endpoint, nursery=nursery, channel_limits=channel_limits)
    if isinstance(endpoint, TlsEndpoint):
        if tls is None or tls.cert is None:
            raise EndpointError(
                f"cannot listen on {endpoint}: TLS needs a certificate, its key and the CA of the clients, "
                "e.g. from CAPSUDO_TLS_CERT, CAPSUDO_TLS_KEY and CAPSUDO_TLS_CA"
            )
        context = tls.server_context()
        listener = await _listen_tcp(endpoint, backlog)
        return TlsListener(
            listener,
            endpoint,
            context,
            handshake_timeout=handshake_timeout,
            on_handshake_error=on_handshake_error,
            nursery=nursery,
            channel_limits=channel_limits,
        )
    listener = await _listen_tcp(endpoint, backlog)
    return NetworkListener(listener, endpoint, nursery=nursery, channel_limits=channel_limits)
