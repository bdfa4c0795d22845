"""Endpoint addresses, one syntax wherever an endpoint is named, and how to reach or serve one.

    /run/capsudo/default         a Unix socket (real descriptors, peer credentials)
    unix:///run/capsudo/default  the same, spelled as a URL
    tcp://HOST:PORT              TCP, the multiplexed channel; IPv6 as [::1]
    tls://HOST:PORT              TCP with mutual TLS
    vsock://CID:PORT             AF_VSOCK between a virtual machine and its host
    ssh://[USER@]HOST[:PORT]/PATH  a Unix socket on another host, reached over ssh

A Unix endpoint gives a UnixChannel; every other one a MuxChannel, "dialing"
on the side that connects and "accepting" on the side that listens. An
ssh:// endpoint runs the system's ssh, which starts `capsudo-proxy --stdio`
on the far side (see _ssh.py); it can only be connected to.

A TLS listener does its handshakes in the background, several at once and
each within a time limit, so a client that connects and says nothing holds
up nobody. accept() returns only connections whose handshake succeeded; a
failed handshake is skipped, and its TlsHandshakeError (one line: who, and
why) goes to the listener's on_handshake_error callback, or to the log.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Protocol, Union

import trio

from ._channel import MessageChannel
from ._listener import EndpointError, open_unix_listener
from ._mux import _TaskGroup
from ._mux_channel import MuxChannel
from ._owner import DEFAULT_MODE, Owner
from ._tls import TlsHandshakeError, TlsOptions, describe_tls_failure
from ._unix import connect_unix
from ._vsock import VMADDR_CID_ANY, connect_vsock, listen_vsock

log = logging.getLogger("capsudo.transport.endpoints")

#: How long a TLS handshake may take, on either side.
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
#: TLS handshakes a listener runs at once (and completed ones it holds for accept()).
DEFAULT_MAX_HANDSHAKES = 32

SCHEMES = ("unix", "tcp", "tls", "vsock", "ssh")


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


@dataclass(frozen=True, slots=True)
class UnixEndpoint:
    path: str
    scheme: ClassVar[str] = "unix"

    def __str__(self) -> str:
        return self.path


@dataclass(frozen=True, slots=True)
class TcpEndpoint:
    host: str
    port: int
    scheme: ClassVar[str] = "tcp"

    def __str__(self) -> str:
        return f"tcp://{_bracket(self.host)}:{self.port}"


@dataclass(frozen=True, slots=True)
class TlsEndpoint:
    host: str
    port: int
    scheme: ClassVar[str] = "tls"

    def __str__(self) -> str:
        return f"tls://{_bracket(self.host)}:{self.port}"


@dataclass(frozen=True, slots=True)
class VsockEndpoint:
    cid: int
    port: int
    scheme: ClassVar[str] = "vsock"

    def __str__(self) -> str:
        cid = "any" if self.cid == VMADDR_CID_ANY else str(self.cid)
        return f"vsock://{cid}:{self.port}"


@dataclass(frozen=True, slots=True)
class SshEndpoint:
    host: str
    path: str
    user: str | None = None
    port: int | None = None
    scheme: ClassVar[str] = "ssh"

    def __str__(self) -> str:
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port is not None else ""
        return f"ssh://{user}{_bracket(self.host)}{port}{self.path}"


Endpoint = Union[UnixEndpoint, TcpEndpoint, TlsEndpoint, VsockEndpoint, SshEndpoint]

_SCHEME_PREFIX = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_HOSTNAME = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?)*\.?$")
_USER = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.-]*$")


def parse_endpoint(text: str) -> Endpoint:
    """The endpoint `text` names. Raises ValueError with a one-line reason."""
    if not isinstance(text, str):
        raise TypeError(f"an endpoint is a string, not {type(text).__name__}")
    if not text:
        raise ValueError("invalid endpoint '': it is empty")
    if any(c in text for c in "\0\n\r"):
        raise ValueError(f"invalid endpoint {text!r}: control characters are not allowed")
    scheme, separator, rest = text.partition("://")
    if not separator:
        prefix = _SCHEME_PREFIX.match(text)
        if prefix and prefix.group(1).lower() in SCHEMES:
            name = prefix.group(1).lower()
            raise ValueError(f"invalid endpoint {text!r}: write {name}://…")
        return UnixEndpoint(text)
    scheme = scheme.lower()
    if scheme == "unix":
        if not rest.startswith("/"):
            raise ValueError(f"invalid endpoint {text!r}: unix:// takes an absolute path, as in unix:///run/capsudo/default")
        return UnixEndpoint(rest)
    if scheme in ("tcp", "tls"):
        host, port = _host_port(rest, text, scheme)
        if port is None:
            raise ValueError(f"invalid endpoint {text!r}: missing port, as in {scheme}://{_bracket(host)}:4711")
        return (TcpEndpoint if scheme == "tcp" else TlsEndpoint)(host, port)
    if scheme == "vsock":
        return _parse_vsock(rest, text)
    if scheme == "ssh":
        return _parse_ssh(rest, text)
    raise ValueError(f"invalid endpoint {text!r}: unknown scheme {scheme}://, expected one of {', '.join(s + '://' for s in SCHEMES)} or a path")


def _host_port(authority: str, text: str, scheme: str, *, max_port: int = 65535) -> tuple[str, int | None]:
    if not authority:
        raise ValueError(f"invalid endpoint {text!r}: missing host")
    for char, what in (("/", "path"), ("?", "query"), ("#", "fragment"), ("@", "user name")):
        if char in authority:
            raise ValueError(f"invalid endpoint {text!r}: {scheme}:// takes no {what}")
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            raise ValueError(f"invalid endpoint {text!r}: unclosed '[' around an IPv6 address")
        host = authority[1:end]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"invalid endpoint {text!r}: {host!r} is not an IPv6 address") from None
        rest = authority[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ValueError(f"invalid endpoint {text!r}: unexpected {rest!r} after the address")
        port_text = rest[1:] if rest else None
    else:
        host, colon, port_text = authority.rpartition(":")
        if not colon:
            host, port_text = authority, None
        if ":" in host:
            raise ValueError(f"invalid endpoint {text!r}: an IPv6 address goes in brackets, as in {scheme}://[::1]:4711")
        if not host:
            raise ValueError(f"invalid endpoint {text!r}: missing host")
        if not _HOSTNAME.match(host):
            raise ValueError(f"invalid endpoint {text!r}: {host!r} is not a host name or address")
    if port_text is None:
        return host, None
    return host, _port(port_text, text, max_port)


def _port(port_text: str, text: str, max_port: int) -> int:
    if not port_text.isascii() or not port_text.isdigit():
        raise ValueError(f"invalid endpoint {text!r}: port {port_text!r} is not a number")
    port = int(port_text)
    if port > max_port:
        raise ValueError(f"invalid endpoint {text!r}: port {port} is above {max_port}")
    return port


def _parse_vsock(rest: str, text: str) -> VsockEndpoint:
    cid_text, colon, port_text = rest.partition(":")
    if not colon or not cid_text or not port_text:
        raise ValueError(f"invalid endpoint {text!r}: expected vsock://CID:PORT")
    if cid_text.lower() == "any":
        cid = VMADDR_CID_ANY
    elif cid_text.isascii() and cid_text.isdigit() and int(cid_text) <= 0xFFFFFFFF:
        cid = int(cid_text)
    else:
        raise ValueError(f"invalid endpoint {text!r}: context id {cid_text!r} is not a number from 0 to 4294967295 (or 'any')")
    return VsockEndpoint(cid, _port(port_text, text, 0xFFFFFFFF))


def _parse_ssh(rest: str, text: str) -> SshEndpoint:
    authority, slash, path = rest.partition("/")
    if not slash or not path:
        raise ValueError(f"invalid endpoint {text!r}: ssh:// needs the remote socket's path, as in ssh://host/run/capsudo/default")
    user = None
    if "@" in authority:
        user, _, authority = authority.rpartition("@")
        if not _USER.match(user):
            raise ValueError(f"invalid endpoint {text!r}: {user!r} is not a user name")
    host, port = _host_port(authority, text, "ssh")
    if port == 0:
        raise ValueError(f"invalid endpoint {text!r}: port 0 cannot be connected to")
    return SshEndpoint(host, "/" + path, user, port)


def _as_endpoint(endpoint: Endpoint | str) -> Endpoint:
    return parse_endpoint(endpoint) if isinstance(endpoint, str) else endpoint


def _reason(exc: OSError) -> str:
    if exc.strerror:
        return exc.strerror
    cause = exc.__cause__
    if isinstance(cause, BaseExceptionGroup):
        for inner in cause.exceptions:
            if isinstance(inner, OSError) and inner.strerror:
                return inner.strerror
    return str(exc)


def _address_text(address) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{_bracket(str(address[0]))}:{address[1]}"
    return str(address)


# ---- connecting ---------------------------------------------------------------


async def connect_endpoint(
    endpoint: Endpoint | str,
    tls: TlsOptions | None = None,
    *,
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    **channel_options,
) -> MessageChannel:
    """A channel to `endpoint`: a UnixChannel, or a dialing MuxChannel.

    `tls` is needed for tls:// and ignored elsewhere. `channel_options` go
    to MuxChannel (exit_grace, stream_buffer_limit, …). Every failure is an
    EndpointError with one line that names the endpoint; a refused TLS
    handshake is its subclass TlsHandshakeError.
    """
    endpoint = _as_endpoint(endpoint)
    if isinstance(endpoint, UnixEndpoint):
        try:
            return await connect_unix(endpoint.path)
        except OSError as exc:
            raise EndpointError(f"cannot connect to {endpoint.path}: {_reason(exc)}") from None
    if isinstance(endpoint, SshEndpoint):
        from ._ssh import connect_ssh

        return await connect_ssh(endpoint, **channel_options)
    if isinstance(endpoint, VsockEndpoint):
        stream = await connect_vsock(endpoint.cid, endpoint.port, str(endpoint))
        return MuxChannel(stream, "dialing", description=f"vsock {endpoint.cid}:{endpoint.port}", **channel_options)
    if endpoint.port == 0:
        raise EndpointError(f"cannot connect to {endpoint}: port 0 is only for listening")
    if isinstance(endpoint, TlsEndpoint) and tls is None:
        raise EndpointError(
            f"cannot connect to {endpoint}: TLS needs a CA certificate (and our certificate and key), "
            "e.g. from CAPSUDO_TLS_CA, CAPSUDO_TLS_CERT and CAPSUDO_TLS_KEY"
        )
    context = tls.client_context() if isinstance(endpoint, TlsEndpoint) and tls is not None else None
    try:
        stream = await trio.open_tcp_stream(endpoint.host, endpoint.port)
    except OSError as exc:
        raise EndpointError(f"cannot connect to {endpoint}: {_reason(exc)}") from None
    if context is None:
        return MuxChannel(stream, "dialing", description=f"tcp {_bracket(endpoint.host)}:{endpoint.port}", **channel_options)
    ssl_stream = trio.SSLStream(stream, context, server_hostname=endpoint.host, https_compatible=False)
    try:
        with trio.fail_after(handshake_timeout):
            await ssl_stream.do_handshake()
    except trio.TooSlowError:
        await _fail_handshake(ssl_stream)
        raise TlsHandshakeError(f"TLS handshake with {endpoint} failed: no answer within {handshake_timeout:g} s") from None
    except trio.BrokenResourceError as exc:
        await _fail_handshake(ssl_stream)
        reason = describe_tls_failure(exc, server_side=False)
        raise TlsHandshakeError(f"TLS handshake with {endpoint} failed: {reason}") from None
    return MuxChannel(ssl_stream, "dialing", description=f"tls {_bracket(endpoint.host)}:{endpoint.port}", **channel_options)


# ---- listening ----------------------------------------------------------------


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
    endpoint = _as_endpoint(endpoint)
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

    def __init__(self, listener: trio.SocketListener, endpoint: Endpoint, **channel_options) -> None:
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
        self._channel_options = channel_options

    @property
    def port(self) -> int:
        return int(self.address[1])

    def _describe(self, peer) -> str:
        return f"{self.endpoint.scheme} {_address_text(peer)}"

    async def accept(self) -> MuxChannel:
        stream = await self._listener.accept()
        try:
            peer = stream.socket.getpeername()
        except OSError:
            peer = "?"
        return MuxChannel(stream, "accepting", description=self._describe(peer), **self._channel_options)

    async def aclose(self) -> None:
        await self._listener.aclose()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.aclose()


def _subject(certificate: dict | None) -> str:
    """Who a verified peer certificate names: its common name, else its subject alternative names."""
    if not certificate:
        return "?"
    names = [f"CN={value}" for rdn in certificate.get("subject", ()) for key, value in rdn if key == "commonName"]
    if not names:
        names = [f"{kind}:{value}" for kind, value in certificate.get("subjectAltName", ())]
    return ",".join(names) or "?"


async def _fail_handshake(ssl_stream: trio.SSLStream) -> None:
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
        **channel_options,
    ) -> None:
        super().__init__(listener, endpoint, nursery=nursery, **channel_options)
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
        return MuxChannel(ssl_stream, "accepting", description=description, **self._channel_options)

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
                await _fail_handshake(ssl_stream)
                self._failed(TlsHandshakeError(
                    f"TLS handshake with {where} failed: no handshake within {self.handshake_timeout:g} s"
                ))
                return
            except trio.BrokenResourceError as exc:
                await _fail_handshake(ssl_stream)
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
        raise EndpointError(f"cannot listen on {endpoint}: {_reason(exc)}") from None
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
        raise EndpointError(f"cannot listen on {endpoint}: {_reason(exc)}") from None
    return trio.SocketListener(sock)


async def open_listener(
    endpoint: Endpoint | str,
    *,
    tls: TlsOptions | None = None,
    owner: Owner | None = None,
    mode: int = DEFAULT_MODE,
    allow_unsafe_directory: bool = False,
    backlog: int = 128,
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    on_handshake_error: HandshakeErrorHandler | None = None,
    nursery: trio.Nursery | None = None,
    **channel_options,
) -> Listener:
    """A listener on `endpoint` whose accept() returns a MessageChannel.

    unix: a UnixListener (owner, mode and allow_unsafe_directory apply). tcp:, vsock: a
    NetworkListener; tls: a TlsListener, which needs `tls` with a
    certificate and key, and whose failed handshakes go to
    `on_handshake_error` (else the log) instead of out of accept(). Check
    `.warning` on a network listener (or call exposure_warning()) and print
    it. Failures to set the listener up are EndpointError.
    """
    endpoint = _as_endpoint(endpoint)
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
        return NetworkListener(listener, endpoint, nursery=nursery, **channel_options)
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
            **channel_options,
        )
    listener = await _listen_tcp(endpoint, backlog)
    return NetworkListener(listener, endpoint, nursery=nursery, **channel_options)
