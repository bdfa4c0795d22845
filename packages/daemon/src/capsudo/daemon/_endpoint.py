"""One endpoint of the daemon: its listener, its sessions, and a configuration a reload may change.

The same object serves the endpoint of a command line and each endpoint of
a configuration file. A session follows the configuration that held when it
began; a reload that changes only what sessions do (pins, environment,
session limits) replaces `config`, and the next session follows the new one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import trio

from capsudo.core import EventSink, Hangup, ServedEndpoint, serve_session
from capsudo.transport import EndpointError, open_listener


class EndpointStartError(Exception):
    """The endpoint cannot listen; the message says why, on one line."""


class DaemonEndpoint:
    def __init__(self, name: str | None, config, listener, *, log: Callable[[str], None],
                 events: EventSink | None = None, finish_when_removed: bool = False,
                 exposed: Sequence[tuple[object, object]] = ()) -> None:
        self.name = name
        self.config = config
        self.listener = listener
        self.finish_when_removed = finish_when_removed
        self._log = log if name is None else (lambda line: log(f"endpoint {name}: {line}"))
        self._events = events
        # What the program reads in CAPSUDO_ENDPOINT: the endpoint's name, else its socket's path.
        self._called = name if name is not None else getattr(listener, "path", None)
        self._shutdown = Hangup()
        #: Where else the endpoint is offered (`expose`): each (config, listener).
        self.exposures = tuple(exposure for exposure, _ in exposed)
        # One session handler and one hang-up for all of the endpoint's listeners.
        self._served = [self._served_on(listener, config), *(self._served_on(other, exposure)
                                                             for exposure, other in exposed)]
        self.served = self._served[0]

    def _served_on(self, listener, config) -> ServedEndpoint:
        limits = config.session_limits
        return ServedEndpoint(
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
                   events: EventSink | None = None, finish_when_removed: bool = False,
                   exposures: Sequence[object] = ()) -> "DaemonEndpoint":
        """Listen as `config` says (or on `adopted`, a listener systemd passed) and at each of
        `exposures` (configurations differing only in how they listen); log where. All or none."""
        named = log if name is None else (lambda line: log(f"endpoint {name}: {line}"))
        if (unpinned := config.policy.unpinned_environment_warning()) is not None:
            named(f"warning: {unpinned}")
        listener = adopted if adopted is not None else await _listen(config, named)
        exposed = []
        try:
            for exposure in exposures:
                exposed.append((exposure, await _listen(exposure, named, exposed=True)))
        except BaseException:
            with trio.CancelScope(shield=True):
                for _, other in exposed:
                    await other.aclose()
                await listener.aclose()
            raise
        return cls(name, config, listener, log=log, events=events, finish_when_removed=finish_when_removed,
                   exposed=exposed)

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
        if len(self._served) == 1:
            await self.served.run(task_status=task_status)
            return
        async with trio.open_nursery() as nursery:
            for served in self._served:
                await nursery.start(served.run)
            task_status.started()

    def stop(self, *, let_finish: bool = False) -> None:
        for served in self._served:
            served.stop(let_finish=let_finish)

    async def _serve_one(self, channel):
        config = self.config  # the one that holds as this session begins
        return await serve_session(channel, config.policy, config.session_limits, self._shutdown,
                                   events=self._events, endpoint=self._called)


async def _listen(config, log: Callable[[str], None], *, exposed: bool = False):
    try:
        listener = await open_listener(
            config.address,
            tls=config.tls,
            owner=config.owner,
            mode=config.mode,
            allow_unsafe_directory=config.allow_unsafe_directory,
            handshake_timeout=config.session_limits.handshake_timeout,
            # A refused TLS client is one line in the log; the others go on.
            on_handshake_error=lambda error: log(str(error)),
            channel_limits=config.channel_limits,
        )
    except EndpointError as exc:
        raise EndpointStartError(str(exc)) from None
    warning = getattr(listener, "warning", None)
    if warning:
        log(f"warning: {warning}")
    log(f"{'exposed' if exposed else 'listening'} on {bound_address(config.address, listener)}")
    return listener


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
