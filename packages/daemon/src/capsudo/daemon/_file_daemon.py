"""`capsudod --config FILE`: every endpoint of a configuration file in one process.

The file is read and checked whole before anything listens; `--check` stops
there and prints what would be served. SIGHUP reads it again (see
_supervisor); SIGTERM and SIGINT stop every endpoint. Sockets passed by
systemd are taken for the endpoint whose name they carry
(FileDescriptorName=) or, failing that, whose path they are bound to; one
that no endpoint claims is refused at start.
"""

from __future__ import annotations

import shlex
import signal
import sys

from ._config_file import ConfigFileError
from ._declared import DeclaredEndpoint, declared_endpoints
from ._server import log


def serve_file(path: str, *, check: bool = False) -> int:
    from ._control import control_settings

    try:
        declared = declared_endpoints(path)
        control = control_settings(path)
    except ConfigFileError as exc:
        log(f"error: {exc}")
        return 2
    undecidable = [name for name, endpoint in declared.items() if endpoint.approval is not None]
    if undecidable and control is None:
        log(f"error: {path}: endpoint {undecidable[0]} has approve = true, but without a [control] table "
            "nobody could decide")
        return 2
    if check:
        for endpoint in declared.values():
            sys.stdout.write(describe(endpoint) + "\n")
        return 0
    import trio

    from capsudo.core import hold_stop_signals

    hold_stop_signals()
    return trio.run(_serve, path, declared, control)


def describe(endpoint: DeclaredEndpoint) -> str:
    """One line per endpoint for --check and the log: name, address, what runs, how it is pinned."""
    config = endpoint.config
    policy = config.policy
    program = shlex.join(policy.program) if policy.program else "sh"
    pins = ", ".join(what for what, pinned in (("command pinned", policy.fixed_arguments),
                                                ("environment pinned", policy.fixed_environment)) if pinned)
    user = f", as {policy.run_as.user}" if policy.run_as.user is not None else ""
    text = f"{endpoint.name}: {config.address} runs {program} ({pins or 'a prefix, with the client environment'}{user})"
    if endpoint.exposures:
        text += f", also at {', '.join(str(exposure.address) for exposure in endpoint.exposures)}"
    return f"{text}: {endpoint.description}" if endpoint.description else text


async def _serve(path: str, declared: dict[str, DeclaredEndpoint], control) -> int:
    import trio

    from capsudo.core import stop_on_signals
    from capsudo.transport import ActivationError, activated_sockets, adopt_listener

    from ._endpoint import EndpointStartError
    from ._supervisor import Supervisor

    try:
        passed = activated_sockets()
    except ActivationError as exc:
        log(str(exc))
        return 1

    def adopt(endpoint: DeclaredEndpoint):
        sock = passed.take(endpoint.name)
        if sock is None and hasattr(endpoint.config.address, "path"):
            sock = passed.take_bound_to(endpoint.config.address.path)
        return adopt_listener(sock, tls=endpoint.config.tls) if sock is not None else None

    supervisor = Supervisor(lambda: declared_endpoints(path), log=log, adopt=adopt)

    async def reload() -> str:
        await supervisor.reload()
        return _status(supervisor)

    async with trio.open_nursery() as nursery:
        try:
            await nursery.start(supervisor.run, declared)
        except EndpointStartError as exc:
            log(str(exc))
            return 1
        unclaimed = passed.unclaimed()
        if unclaimed:
            log(unclaimed)
            supervisor.stop()
            return 1
        if control is not None:
            from ._control import ControlServer
            from ._grants import GrantError

            server = ControlServer(control, supervisor, log=log)
            try:
                await server.restore()
                await nursery.start(server.run)
            except GrantError as exc:
                log(str(exc))
                supervisor.stop()
                nursery.cancel_scope.cancel()
                return 1
        from capsudo.transport import notify_ready

        notify_ready(_status(supervisor))
        await stop_on_signals(log, [supervisor], (signal.SIGTERM, signal.SIGINT, signal.SIGHUP), reload=reload)
        # The control socket goes with the endpoints; the endpoints' sessions wind down as they do.
        if control is not None:
            nursery.cancel_scope.deadline = trio.current_time() + _longest_grace(supervisor) + 2
    return 0


def _longest_grace(supervisor) -> float:
    return max((endpoint.config.session_limits.hangup_grace for endpoint in supervisor.running.values()),
               default=0.0)


def _status(supervisor) -> str:
    names = ", ".join(supervisor.running) or "nothing"
    return f"serving {len(supervisor.running)} endpoint(s): {names}"
