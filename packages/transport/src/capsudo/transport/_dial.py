"""Reaching a tcp:// or tls:// endpoint with the standard library only: the one-shot client's link.

The command line starts for every call, and trio costs it most of a tenth
of a second; a session needs one connection, which `socket` (and `ssl`,
imported only for tls://) makes as well. The link is non-blocking after
the connection (and the TLS handshake) is made, for a poll() loop.
What each failure says is the same line `_connect` gives on trio. tcp://
takes `_socket` itself: the `socket` module around it imports enum and
selectors, a few milliseconds of every start (`ssl` needs it, so tls:// pays).
"""

from __future__ import annotations

import _socket as socket

from ._address import TlsEndpoint, bracket
from ._errors import EndpointError
from ._connect_failure import errno_reason

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._address import TcpEndpoint
    from ._tls import TlsOptions

#: How long a TLS handshake may take, on either side.
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
#: How long a graceful close of the link (our end of file, then the peer's) may take.
CLOSE_TIMEOUT = 1.0


def refuse_undialable(endpoint: TcpEndpoint, tls: TlsOptions | None) -> None:
    """An EndpointError for a network endpoint that cannot be dialled as given."""
    if endpoint.port == 0:
        raise EndpointError(f"cannot connect to {endpoint}: port 0 is only for listening")
    if isinstance(endpoint, TlsEndpoint) and tls is None:
        raise EndpointError(
            f"cannot connect to {endpoint}: TLS needs a CA certificate (and our certificate and key), "
            "e.g. from CAPSUDO_TLS_CA, CAPSUDO_TLS_CERT and CAPSUDO_TLS_KEY"
        )


class Link:
    """One connected, non-blocking stream socket (TLS-wrapped for tls://).

    recv() and send() return None where the socket has nothing or takes
    nothing now; `pending` is what TLS has decrypted already, which the
    socket's readiness does not show.
    """

    def __init__(self, sock, description: str, tls: bool) -> None:
        self.socket = sock
        self.description = description
        self.tls = tls
        self._not_now: tuple[type[OSError], ...] = (BlockingIOError,)
        if tls:
            import ssl

            self._not_now = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)

    def fileno(self) -> int:
        return self.socket.fileno()

    @property
    def pending(self) -> int:
        return self.socket.pending() if self.tls else 0

    def recv(self, size: int) -> bytes | None:
        try:
            return self.socket.recv(size)
        except self._not_now:
            return None

    def send(self, data) -> int | None:
        try:
            return self.socket.send(data)
        except self._not_now:
            return None

    def close(self) -> None:
        """Say we are done, read what the peer still sends until it is done too, and close.

        Closing with unread bytes would reset the connection, and the peer
        would meet an error where the end should be.
        """
        import select

        sock = self.socket
        try:
            if self.tls:
                try:
                    sock.unwrap()  # sends our close_notify; the peer's is not awaited
                except (OSError, ValueError):
                    pass
            sock.shutdown(socket.SHUT_WR)
            poller = select.poll()
            poller.register(sock.fileno(), select.POLLIN)
            while poller.poll(CLOSE_TIMEOUT * 1000) and socket.socket.recv(sock, 65536, socket.MSG_DONTWAIT):
                pass
        except OSError:
            pass
        finally:
            sock.close()


def dial(endpoint: TcpEndpoint, tls: TlsOptions | None, handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT) -> Link:
    """A Link to a tcp:// or tls:// endpoint; every failure is an EndpointError with one line."""
    refuse_undialable(endpoint, tls)
    secure = isinstance(endpoint, TlsEndpoint)
    context = tls.client_context() if secure and tls is not None else None
    try:
        sock = _connect(endpoint.host, endpoint.port)
    except OSError as exc:
        raise EndpointError(f"cannot connect to {endpoint}: {errno_reason(exc)}") from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as trio does: a keystroke goes out at once
    where = f"{bracket(endpoint.host)}:{endpoint.port}"
    if context is None:
        sock.setblocking(False)
        return Link(sock, f"tcp {where}", tls=False)
    return Link(_handshake(sock, context, endpoint, handshake_timeout), f"tls {where}", tls=True)


def _connect(host: str, port: int):
    """A connected _socket.socket, trying each address in turn as socket.create_connection does."""
    # An ASCII name goes to getaddrinfo as bytes: a str is encoded with the
    # idna codec, whose import (re, stringprep, unicodedata) costs more than the lookup.
    failure: OSError | None = None
    for family, kind, proto, _, address in socket.getaddrinfo(host.encode() if host.isascii() else host, port,
                                                              0, socket.SOCK_STREAM):
        sock = socket.socket(family, kind, proto)
        try:
            sock.connect(address)
            return sock
        except OSError as exc:
            sock.close()
            failure = exc
    raise failure or OSError(f"no address for {host}")


def _handshake(raw, context, endpoint: TcpEndpoint, timeout: float):
    import socket as socket_module  # ssl wraps only the module's own sockets
    import ssl

    sock = socket_module.socket(fileno=raw.detach())

    from ._tls import TlsHandshakeError, describe_tls_failure

    secure = context.wrap_socket(sock, server_hostname=endpoint.host, do_handshake_on_connect=False)
    secure.settimeout(timeout)
    try:
        secure.do_handshake()
    except TimeoutError:
        secure.close()
        raise TlsHandshakeError(f"TLS handshake with {endpoint} failed: no answer within {timeout:g} s") from None
    except (ssl.SSLError, ssl.CertificateError) as exc:
        secure.close()
        reason = describe_tls_failure(exc, server_side=False)
        raise TlsHandshakeError(f"TLS handshake with {endpoint} failed: {reason}") from None
    except OSError as exc:
        secure.close()
        reason = exc.strerror.lower() if exc.strerror else "the connection closed during the handshake"
        raise TlsHandshakeError(f"TLS handshake with {endpoint} failed: {reason}") from None
    secure.setblocking(False)
    return secure
