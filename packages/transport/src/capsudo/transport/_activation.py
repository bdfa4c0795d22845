"""systemd socket activation and readiness notification, standard library only.

With `ListenStream=` and `Accept=no`, systemd binds the socket (with the
owner and mode of the .socket unit) and passes it as descriptor 3; the
daemon only accepts on it. `sd_notify("READY=1")` tells a `Type=notify`
service that the daemon is serving.
"""

from __future__ import annotations

import os
import socket

SD_LISTEN_FDS_START = 3


def inherited_sockets(environ=os.environ) -> list[socket.socket]:
    """Listening sockets passed by systemd to this very process, if any.

    The variables are removed so that programs started later do not see them.
    """
    if environ.get("LISTEN_PID") != str(os.getpid()):
        return []
    try:
        count = int(environ.get("LISTEN_FDS", "0"))
    except ValueError:
        return []
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        environ.pop(name, None)
    sockets = []
    for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count):
        os.set_inheritable(fd, False)
        sockets.append(socket.socket(fileno=fd))
    return sockets


def notify(state: str, environ=os.environ) -> bool:
    """Send a state line (e.g. READY=1, STOPPING=1) to systemd; False when not under it."""
    address = environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.connect(address)
            sock.sendall(state.encode())
        except OSError:
            return False
    return True
