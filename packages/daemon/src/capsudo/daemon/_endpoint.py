"""One endpoint of the daemon: its listener, its sessions, and a configuration a reload may change.

The same object serves the endpoint of a command line and each endpoint of
a configuration file. A session follows the configuration that held when it
began; a reload that changes only what sessions do (pins, environment,
session limits) replaces `config`, and the next session follows the new one.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import trio

from capsudo.core import EndpointDescription, EventSink, Hangup, ServedEndpoint, serve_session
from capsudo.transport import EndpointError, open_listener


class EndpointStartError(Exception):
    """The endpoint cannot listen; the message says why, on one line."""


class DaemonEndpoint:
    def __init__(self, name: str | None, config, listener, *, log: Callable[[str], None],
                 events: EventSink | None = None, finish_when_removed: bool = False) -> None:
        self.name = name
        self.config = config
        self.listener = listener
        self.finish_when_removed = finish_when_removed
        self._log = log if name is None else (lambda line: log(f"endpoint {name}: {line}"))
        self._events = events
        # What the program reads in CAPSUDO_ENDPOINT: the endpoint's name, else its socket's path.
        self._called = name if name is not None else getattr(listener, "path", None)
        self._shutdown = Hangup()
        limits = config.session_limits
        self.served = ServedEndpoint(
            listener,
            self._serve_one,
            log=self._log,
            limits=config.connection_limits,
            max_handshake_bytes=limits.max_bytes,
            hang_up=partial(self._shutdown.hang_up_all, limits.hangup_grace),
            # Programs get SIGHUP at the stop and SIGKILL after the grace.
            grace=limits.hangup_grace,
        )

    @classmethod
    async def open(cls, name: str | None, config, *, log: Callable[[str], None], adopted=None,
                   events: EventSink | None = None, finish_when_removed: bool = False) -> "DaemonEndpoint":
        """Listen as `config` says (or on `adopted`, a listener systemd passed), and log where."""
        named = log if name is None else (lambda line: log(f"endpoint {name}: {line}"))
        if adopted is not None:
            listener = adopted
        else:
            try:
                listener = await open_listener(
                    config.address,
                    tls=config.tls,
                    owner=config.owner,
                    mode=config.mode,
                    allow_unsafe_directory=config.allow_unsafe_directory,
                    handshake_timeout=config.session_limits.handshake_timeout,
                    # A refused TLS client is one line in the log; the others go on.
                    on_handshake_error=lambda error: named(str(error)),
                    channel_limits=config.channel_limits,
                )
            except EndpointError as exc:
                raise EndpointStartError(str(exc)) from None
        warning = getattr(listener, "warning", None)
        if warning:
            named(f"warning: {warning}")
        if (unpinned := config.policy.unpinned_environment_warning()) is not None:
            named(f"warning: {unpinned}")
        named(f"listening on {bound_address(config.address, listener)}")
        return cls(name, config, listener, log=log, events=events, finish_when_removed=finish_when_removed)

    def listens_as(self, other) -> bool:
        """Whether `other` can be served on this endpoint's listener (only what sessions do differs)."""
        mine, theirs = self.config, other
        return (
            (mine.address, mine.tls, mine.owner, mine.mode, mine.allow_unsafe_directory)
            == (theirs.address, theirs.tls, theirs.owner, theirs.mode, theirs.allow_unsafe_directory)
            and mine.connection_limits == theirs.connection_limits
            and mine.channel_limits == theirs.channel_limits
            and mine.session_limits.handshake_timeout == theirs.session_limits.handshake_timeout
            and mine.session_limits.max_bytes == theirs.session_limits.max_bytes
            and mine.session_limits.hangup_grace == theirs.session_limits.hangup_grace
        )

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        await self.served.run(task_status=task_status)

    def stop(self, *, let_finish: bool = False) -> None:
        self.served.stop(let_finish=let_finish)

    async def _serve_one(self, channel):
        config = self.config  # the one that holds as this session begins
        about = EndpointDescription(self._called, config.description, config.describe)
        return await serve_session(channel, config.policy, config.session_limits, self._shutdown,
                                   events=self._events, endpoint=self._called, description=about)


def bound_address(endpoint, listener) -> str:
    """The endpoint as bound: with the real port when 0 was asked for."""
    from capsudo.transport import TcpEndpoint, TlsEndpoint, UnixEndpoint, VsockEndpoint

    if isinstance(endpoint, UnixEndpoint) or endpoint is None:
        return getattr(listener, "path", str(endpoint))
    port = listener.port
    if isinstance(endpoint, VsockEndpoint):
        return str(VsockEndpoint(endpoint.cid, port))
    kind = TlsEndpoint if isinstance(endpoint, TlsEndpoint) else TcpEndpoint
    return str(kind(endpoint.host, port))
