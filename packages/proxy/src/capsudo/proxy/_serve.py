"""Running the proxy: on a listener, or for one session on stdio."""

from __future__ import annotations

import os

import trio

from capsudo.core import Logger, ServedEndpoint, stop_on_signals
from capsudo.transport import EndpointError, MuxChannel, connect_endpoint, exposure_warning, open_listener

from ._forward import forward_session
from ._settings import ProxySettings

log = Logger("capsudo-proxy")


def _connector(settings: ProxySettings):
    async def connect(session_id: str):
        return await connect_endpoint(settings.target, tls=settings.target_tls, session_id=session_id)

    return connect


async def serve_listening(settings: ProxySettings) -> int:
    try:
        listener = await open_listener(settings.listen, tls=settings.listen_tls, owner=settings.owner, mode=settings.mode,
                                       allow_unsafe_directory=settings.allow_unsafe_directory)
    except EndpointError as exc:
        log(str(exc))
        return 1
    except OSError as exc:  # e.g. a directory on the way that we may not search
        log(f"cannot listen on {settings.listen}: {exc.strerror or exc}")
        return 1
    warning = exposure_warning(settings.listen)
    if warning and settings.listen_tls is None:
        log(warning)
    # A network listener asked for port 0 names the port it got, for whoever chains to it.
    bound = getattr(listener, "address", None)
    listening = settings.listen
    if isinstance(bound, tuple) and hasattr(listening, "host"):
        listening = type(listening)(listening.host, bound[1])
    log(f"forwarding {listening} to {settings.target}")
    connect = _connector(settings)

    async def serve_one(channel):
        return await forward_session(channel, connect, str(settings.target), settings.limits)

    endpoint = ServedEndpoint(
        listener, serve_one, log=log, limits=settings.connections, max_handshake_bytes=settings.limits.max_bytes
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(endpoint.run)
        await stop_on_signals(log, [endpoint])
    return 0


async def serve_stdio(settings: ProxySettings) -> int:
    """One session on stdin/stdout, as the accepting side of a multiplexed channel.

    Silent unless it fails: over ssh, our stderr is the caller's terminal.
    """
    link = trio.StapledStream(trio.lowlevel.FdStream(os.dup(1)), trio.lowlevel.FdStream(os.dup(0)))
    # The channel has its own copies; stdin and stdout become /dev/null so
    # nothing else can read or write the link.
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    origin = os.environ.get("SSH_CONNECTION", "").split(" ")
    description = f"ssh {origin[0]}:{origin[1]}" if len(origin) >= 2 and origin[0] else "stdio"
    channel = MuxChannel(link, "accepting", description=description)
    record = await forward_session(channel, _connector(settings), str(settings.target), settings.limits)
    if record.outcome != "ok":
        log(str(record))
    return 0
