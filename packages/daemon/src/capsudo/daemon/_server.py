"""capsudod's ways to serve one endpoint: listening, on the socket systemd passed, or one session on stdin.

The accept loop (session and handshake slots, back-off under pressure) is
core's; a DaemonEndpoint binds it to the endpoint's configuration. Without
-S the listener is the one socket systemd passed (socket activation,
Accept=no), else the session is the connection on stdin (Accept=yes,
inetd); the service manager hears READY=1 and what is served.
"""

from __future__ import annotations

import os
import shlex
import socket

import trio

from capsudo.core import (STOP_SIGNALS, EndpointConfig, EventSink, Hangup, Logger, Policy, hold_stop_signals,
                          serve_session, stop_on_signals, EndpointDescription)
from capsudo.transport import (ActivationError, EndpointError, UnixChannel, activated_sockets, adopt_listener,
                               notify_ready)

from ._chained import inherited_session_id
from ._endpoint import DaemonEndpoint

log = Logger("capsudod")


def serving_status(policy: Policy, where: str) -> str:
    """The STATUS= line: which program, on which endpoint."""
    program = shlex.join(policy.program) if policy.program else "sh"
    pins = [flag for flag, pinned in (("-f", policy.fixed_arguments), ("-E", policy.fixed_environment)) if pinned]
    return f"serving {program}{' (' + ' '.join(pins) + ')' if pins else ''} on {where}"


async def serve_endpoint(endpoint: DaemonEndpoint, where: str) -> int:
    """Serve one endpoint until SIGTERM, SIGINT or SIGHUP, telling the service manager when it serves."""
    async with trio.open_nursery() as nursery:
        await nursery.start(endpoint.run)
        notify_ready(serving_status(endpoint.config.policy, where))

        async def until_signal() -> None:
            # SIGTERM, SIGINT or SIGHUP: stop accepting, hang running programs up.
            await stop_on_signals(log, [endpoint])

        nursery.start_soon(until_signal)
        # An endpoint that expires or is spent ends the daemon, once its last sessions have.
        await endpoint.served.stopped.wait()
        nursery.cancel_scope.cancel()
    return 0


def serve_without_endpoint(config: EndpointConfig, events: EventSink | None) -> int:
    """No -S: the socket systemd passed, else one session on stdin; a one-line refusal for anything else."""
    try:
        passed = activated_sockets()
        only = passed.take_only()
    except ActivationError as exc:
        log(str(exc))
        return 1
    if only is not None:
        name, sock = only
        try:
            listener = adopt_listener(sock)
        except EndpointError as exc:
            log(str(exc))
            return 1
        where = f"{listener.path} (passed by systemd as {name})" if hasattr(listener, "path") else name
        log(f"listening on {where}")
        endpoint = DaemonEndpoint(None, config, listener, log=log, events=events)
        hold_stop_signals()
        return trio.run(serve_endpoint, endpoint, where)
    refusal = stdin_refusal()
    if refusal is not None:
        log(refusal)
        return 2
    trio.run(serve_stdin, config, events)
    return 0


def stdin_refusal() -> str | None:
    """Why stdin is not a connection capsudod can serve, or None when it is one."""
    where = "without -S, capsudod serves one session on the Unix socket that is its stdin"
    try:
        fd = os.dup(0)
    except OSError as exc:
        return f"{where}, and stdin is not open ({exc.strerror}); give -S endpoint to listen on one"
    try:
        probe = socket.socket(fileno=fd)
    except OSError as exc:
        os.close(fd)
        return f"{where}, and stdin is not a socket ({exc.strerror}); give -S endpoint to listen on one"
    with probe:
        if probe.family != socket.AF_UNIX or probe.type != socket.SOCK_STREAM:
            return f"{where}, and stdin is a socket of another kind; give -S endpoint to listen on one"
        if probe.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            return (f"{where}, and stdin is a listening socket; with systemd use Accept=yes for this, "
                    "or pass the socket as a file descriptor (StandardInput= unset)")
    return None


async def serve_stdin(config: EndpointConfig, events: EventSink | None) -> None:
    """Serve exactly one session on the connected Unix socket that is stdin."""
    sock = socket.fromfd(0, socket.AF_UNIX, socket.SOCK_STREAM)
    # Our copy is the only one we keep: stdin becomes /dev/null, so the
    # client's end-of-file is not held up by a stray descriptor.
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    channel = UnixChannel(sock)
    session_id = inherited_session_id()
    shutdown = Hangup()
    limits = config.session_limits
    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(*STOP_SIGNALS) as signals:

            async def hang_up_on_signal() -> None:
                async for _ in signals:
                    await shutdown.hang_up_all(limits.hangup_grace)
                    return

            nursery.start_soon(hang_up_on_signal)
            about = EndpointDescription(None, config.description, config.describe)
            record = await serve_session(channel, config.policy, limits, shutdown, events=events,
                                         description=about, session_id=session_id)
            nursery.cancel_scope.cancel()
    log(str(record))
