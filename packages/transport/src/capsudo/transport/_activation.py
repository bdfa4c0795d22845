"""systemd socket activation: the listening sockets passed to this process, by name.

With `ListenStream=` and `Accept=no`, systemd binds each socket (with the
owner and mode of the .socket unit) and passes them from descriptor 3 on,
saying how many in `LISTEN_FDS`, for which process in `LISTEN_PID`, and
under which names in `LISTEN_FDNAMES` (a unit's `FileDescriptorName=`,
else the socket unit's name; one name for all the sockets of a unit). A
daemon serving many endpoints takes each socket by its endpoint's name, or
by its path, and refuses the ones nobody took; a daemon
serving one endpoint takes the only one. adopt_listener() makes a listener
of a passed socket that leaves its path to systemd when closed.
"""

from __future__ import annotations

import os
import socket
import stat

import trio

from ._address import TcpEndpoint, TlsEndpoint, VsockEndpoint
from ._listener import EndpointError, UnixListener

SD_LISTEN_FDS_START = 3
_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


class ActivationError(Exception):
    """What systemd passed cannot be used; the message says why, on one line."""


class ActivatedSockets:
    """The sockets systemd passed, each under its name, until someone takes it.

    Names need not be unique (several ListenStream= of one unit share its
    name): take() hands out the first one left under that name.
    """

    def __init__(self, named: list[tuple[str, socket.socket]]) -> None:
        self._left = list(named)

    def __len__(self) -> int:
        return len(self._left)

    @property
    def names(self) -> list[str]:
        """The names of the sockets not taken yet, in the order systemd passed them."""
        return [name for name, _ in self._left]

    def take(self, name: str) -> socket.socket | None:
        """The passed socket named `name`, now the caller's; None if there is none (left)."""
        for index, (candidate, sock) in enumerate(self._left):
            if candidate == name:
                del self._left[index]
                return sock
        return None

    def take_bound_to(self, path: str) -> socket.socket | None:
        """The passed Unix socket bound to `path`, now the caller's; None if there is none (left).

        For the sockets of one unit, which share one name: FileDescriptorName=
        names every socket of a unit alike, so their paths tell them apart.
        """
        wanted = os.path.abspath(path)
        for index, (_, sock) in enumerate(self._left):
            if sock.family == socket.AF_UNIX and sock.getsockname() == wanted:
                del self._left[index]
                return sock
        return None

    def take_only(self) -> tuple[str, socket.socket] | None:
        """The one socket passed, for a daemon serving one endpoint; None if none was.

        More than one is an ActivationError: which of them to serve is not for us to guess.
        """
        if not self._left:
            return None
        if len(self._left) > 1:
            raise ActivationError(
                f"systemd passed {len(self._left)} sockets ({', '.join(self.names)}) to a daemon serving one "
                "endpoint; give each its own unit instance, or serve them from a configuration file"
            )
        return self._left.pop()

    def unclaimed(self) -> str | None:
        """A line naming the sockets nobody took (to refuse them with), or None."""
        if not self._left:
            return None
        return f"systemd passed sockets that no endpoint is named for: {', '.join(self.names)}"

    def close(self) -> None:
        """Close the sockets nobody took: systemd still holds its own copies."""
        for _, sock in self._left:
            sock.close()
        self._left.clear()


def activated_sockets(environ=os.environ) -> ActivatedSockets:
    """The sockets systemd passed to this very process (none when not socket-activated).

    The variables are removed either way, so that programs started later
    do not take the sockets for theirs. Variables that do not add up are an
    ActivationError; a LISTEN_PID of another process means they were meant
    for it, and we take nothing.
    """
    values = {name: environ.pop(name, None) for name in _VARIABLES}
    if values["LISTEN_PID"] is None or values["LISTEN_FDS"] is None:
        return ActivatedSockets([])
    if values["LISTEN_PID"] != str(os.getpid()):
        return ActivatedSockets([])
    count_text = values["LISTEN_FDS"]
    if not count_text.isdigit():
        raise ActivationError(f"LISTEN_FDS is {count_text!r}, not a number of descriptors")
    count = int(count_text)
    names = values["LISTEN_FDNAMES"].split(":") if values["LISTEN_FDNAMES"] is not None else ["unknown"] * count
    if len(names) != count:
        raise ActivationError(f"LISTEN_FDNAMES names {len(names)} sockets but LISTEN_FDS says {count}")
    named = []
    try:
        for offset, name in enumerate(names):
            named.append((name, _passed_socket(SD_LISTEN_FDS_START + offset, name)))
    except ActivationError:
        for _, sock in named:
            sock.close()
        raise
    return ActivatedSockets(named)


def _passed_socket(fd: int, name: str) -> socket.socket:
    try:
        mode = os.fstat(fd).st_mode
    except OSError as exc:
        raise ActivationError(f"descriptor {fd} ({name}) that systemd passed is unusable: {exc.strerror}") from None
    if not stat.S_ISSOCK(mode):
        raise ActivationError(f"descriptor {fd} ({name}) that systemd passed is not a socket")
    # Not for the programs we start: they must not hold the endpoint open.
    os.set_inheritable(fd, False)
    sock = socket.socket(fileno=fd)
    if sock.type != socket.SOCK_STREAM or not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        sock.detach()
        raise ActivationError(f"descriptor {fd} ({name}) that systemd passed is not a listening stream socket"
                              " (ListenStream= with Accept=no)")
    return sock


class AdoptedUnixListener(UnixListener):
    """A UnixListener on a socket systemd bound: its path is systemd's, and stays when we close."""

    def __init__(self, sock: socket.socket, **channel_options) -> None:
        address = sock.getsockname()
        if not isinstance(address, str):  # the abstract namespace: b"\0name"
            address = "@" + address[1:].decode(errors="replace")
        super().__init__(sock, address or "(unnamed socket)", identity=(-1, -1), **channel_options)

    def owns_path(self) -> bool:
        return False


def adopt_listener(sock: socket.socket, *, tls=None, **listener_options):
    """A listener (as open_listener() gives) on a listening socket systemd passed.

    A Unix socket gives a listener whose accept() returns UnixChannels; a TCP
    one a NetworkListener, or with `tls` (TlsOptions) a TlsListener; a vsock
    one a NetworkListener. `listener_options` are open_listener()'s
    (handshake_timeout, on_handshake_error, channel limits).
    """
    from ._listen import NetworkListener, TlsListener

    sock.setblocking(False)
    channel_options = {key: value for key, value in listener_options.items()
                       if key not in ("handshake_timeout", "on_handshake_error")}
    if sock.family == socket.AF_UNIX:
        if tls is not None:
            raise EndpointError("TLS applies to TCP sockets, and systemd passed a Unix socket")
        return AdoptedUnixListener(sock)
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        host, port = sock.getsockname()[:2]
        endpoint = (TlsEndpoint if tls is not None else TcpEndpoint)(host, port)
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
        if tls is None:
            return NetworkListener(listener, endpoint, **channel_options)
        return TlsListener(listener, endpoint, tls.server_context(), **listener_options)
    if sock.family == getattr(socket, "AF_VSOCK", None):
        cid, port = sock.getsockname()
        return NetworkListener(trio.SocketListener(trio.socket.from_stdlib_socket(sock)), VsockEndpoint(cid, port),
                               **channel_options)
    raise EndpointError(f"systemd passed a socket of family {sock.family!r}, which capsudo cannot serve")
