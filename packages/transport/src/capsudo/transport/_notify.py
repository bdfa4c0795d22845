"""sd_notify: telling the service manager how the daemon is doing, standard library only.

A `Type=notify` service sends state lines (`READY=1` once it serves,
`RELOADING=1` while it re-reads its configuration, `STOPPING=1` at its
stop, `STATUS=` a line for `systemctl status`) as one datagram to the
AF_UNIX socket named by `$NOTIFY_SOCKET` (a leading `@` is the abstract
namespace). Without that variable every call does nothing, so a daemon
calls these whether or not a service manager runs it.
"""

from __future__ import annotations

import os
import socket
import time

# A service manager that does not read its socket must not stall the daemon.
SEND_TIMEOUT = 1.0


def notify(*lines: str, environ=os.environ) -> bool:
    """Send state lines (`"READY=1"`, `"STATUS=…"`) as one message; False when nobody listens."""
    address = environ.get("NOTIFY_SOCKET")
    if not address or not lines:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    elif not address.startswith("/"):
        return False  # vsock: and other kinds are not ours to reach
    message = "\n".join(line.replace("\n", " ") for line in lines).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.settimeout(SEND_TIMEOUT)
        try:
            sock.sendto(message, address)
        except OSError:
            return False
    return True


def notify_ready(status: str | None = None, environ=os.environ) -> bool:
    """The daemon serves (again, after a reload); `status` says what, for `systemctl status`."""
    return notify("READY=1", *([f"STATUS={status}"] if status else []), environ=environ)


def notify_reloading(status: str | None = None, environ=os.environ) -> bool:
    """The daemon re-reads its configuration; notify_ready() when it is done.

    MONOTONIC_USEC lets systemd (253 and later) tell this reload from an
    earlier one whose READY=1 it has not seen yet.
    """
    stamp = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify("RELOADING=1", f"MONOTONIC_USEC={stamp}", *([f"STATUS={status}"] if status else []),
                  environ=environ)


def notify_stopping(status: str | None = None, environ=os.environ) -> bool:
    """The daemon is stopping: no new sessions, the running ones winding down."""
    return notify("STOPPING=1", *([f"STATUS={status}"] if status else []), environ=environ)


def notify_status(status: str, environ=os.environ) -> bool:
    """A line for `systemctl status`, without changing the state."""
    return notify(f"STATUS={status}", environ=environ)
