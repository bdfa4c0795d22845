"""The endpoints of one configuration file, served by one process and reloaded in place.

A reload reads the file again and compares it with what runs, endpoint by
endpoint (by name): a new one starts, a removed one stops (its programs hung
up, or left to finish if its `when-removed` says so), a changed one serves
its next sessions under the new configuration. Sessions under way on an
endpoint that did not change are never touched, and a file that does not
validate changes nothing at all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import trio

from capsudo.core import AuditFiles
from capsudo.transport import EndpointError

from ._approval import ApprovalBook
from ._declared import DeclaredEndpoint
from ._endpoint import DaemonEndpoint, EndpointStartError


class Supervisor:
    """Runs the endpoints `load()` declares; `reload()` applies a new reading of them."""

    def __init__(self, load: Callable[[], Mapping[str, DeclaredEndpoint]], *, log: Callable[[str], None],
                 adopt: Callable[[DeclaredEndpoint], object] | None = None) -> None:
        self._load = load
        self._log = log
        # Socket activation: the listener systemd passed for an endpoint, if any.
        self._adopt = adopt
        self.running: dict[str, DaemonEndpoint] = {}
        self._declared: dict[str, DeclaredEndpoint] = {}
        self.audit = AuditFiles()
        self._nursery: trio.Nursery | None = None
        self._reloading = trio.Lock()
        #: The requests waiting for a person's decision, of every endpoint.
        self.approvals = ApprovalBook()
        #: The names of the endpoints the control socket granted.
        self.granted: set[str] = set()

    async def run(self, declared: Mapping[str, DeclaredEndpoint], *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Start every endpoint of `declared`, or none (raising the first failure); serve until stop()."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for endpoint in declared.values():
                    try:
                        await self._start(endpoint)
                    except EndpointStartError as exc:
                        self.stop()
                        raise EndpointStartError(f"endpoint {endpoint.name}: {exc}") from None
                task_status.started()
        finally:
            self.audit.close()

    async def reload(self) -> bool:
        """Read the configuration again and apply it; False (and a log line) if it does not validate."""
        async with self._reloading:
            try:
                declared = self._load()
            except Exception as exc:  # ConfigFileError: one line naming file, line and field
                self._log(f"reload: {exc}; the running configuration is kept")
                return False
            self.audit.reopen()  # logrotate moved the files away: new ones at the same paths
            # Grants are the control socket's, not the file's: a reload leaves them be.
            for name in [name for name in self.running if name not in declared and name not in self.granted]:
                self._log(f"endpoint {name}: removed")
                endpoint = self.running.pop(name)
                del self._declared[name]
                endpoint.stop(let_finish=endpoint.finish_when_removed)
            for name, wanted in declared.items():
                if name in self.granted:
                    self._log(f"endpoint {name}: a grant has this name; the file's endpoint is not served")
                    continue
                current = self.running.get(name)
                if current is None:
                    await self._start_logged(wanted)
                elif self._declared[name] == wanted:
                    continue
                elif (current.listens_as(wanted.config) and current.config.audit == wanted.config.audit
                      and current.exposures == wanted.exposures):
                    current.config = wanted.config
                    current.finish_when_removed = wanted.finish_when_removed
                    current.approval, current.description = wanted.approval, wanted.description
                    self._declared[name] = wanted
                    self._log(f"endpoint {name}: changed; new sessions follow the new configuration")
                else:
                    # A new listener (its address, TLS, socket or connection
                    # limits changed): the sessions under way run on to their end.
                    self._log(f"endpoint {name}: changed; listening anew, sessions under way run on")
                    current.stop(let_finish=True)
                    del self.running[name], self._declared[name]
                    await self._start_logged(wanted)
            return True

    def stop(self) -> None:
        """Stop every endpoint, hanging their programs up, as at SIGTERM."""
        for endpoint in self.running.values():
            endpoint.stop()

    async def add(self, declared: DeclaredEndpoint, *, on_use=None) -> None:
        """Serve a grant; raises EndpointStartError."""
        await self._start(declared, on_use=on_use)
        self.granted.add(declared.name)

    def remove(self, name: str) -> DaemonEndpoint | None:
        """Forget a grant's endpoint, returning it for its caller to stop."""
        self.granted.discard(name)
        self._declared.pop(name, None)
        return self.running.pop(name, None)

    async def _start(self, declared: DeclaredEndpoint, *, on_use=None) -> None:
        config = declared.config
        try:
            events = self.audit.sink(config.audit, declared.name)
        except OSError as exc:
            raise EndpointStartError(f"cannot open its audit sink {exc.filename}: {exc.strerror}") from None
        try:
            adopted = self._adopt(declared) if self._adopt is not None else None
        except EndpointError as exc:
            raise EndpointStartError(str(exc)) from None
        endpoint = await DaemonEndpoint.open(declared.name, config, log=self._log, adopted=adopted, events=events,
                                             finish_when_removed=declared.finish_when_removed,
                                             exposures=declared.exposures, on_use=on_use,
                                             approval=declared.approval, approvals=self.approvals)
        self.running[declared.name] = endpoint
        self._declared[declared.name] = declared
        await self._nursery.start(endpoint.run)

    async def _start_logged(self, declared: DeclaredEndpoint) -> None:
        try:
            await self._start(declared)
        except EndpointStartError as exc:
            self._log(f"endpoint {declared.name}: {exc}")
