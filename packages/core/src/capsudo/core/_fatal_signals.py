"""The client's way out on SIGTERM, SIGHUP, SIGINT and SIGQUIT: an exception, so every `finally` runs.

Apart from the terminal's handling because a non-interactive session needs
it too, and this module imports nothing beyond the C `_signal`: the command
starts for every call, and `signal` and `contextlib` cost milliseconds of it.
"""

from __future__ import annotations

import _signal as signal

FATAL_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGQUIT)


class Interrupted(BaseException):
    """A signal asked the client to stop; carries the signal number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class stop_on_signals:  # noqa: N801  (used as a function: `with stop_on_signals():`)
    """Turn fatal signals into Interrupted, so `finally` blocks run.

    Only the first one raises: a second signal must not cut short the
    clean-up (the terminal's restoration) that the first one started.
    """

    def __enter__(self) -> None:
        self.interrupted = False
        self.previous = {signum: signal.signal(signum, self._interrupt) for signum in FATAL_SIGNALS}

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def _interrupt(self, signum, frame) -> None:
        if not self.interrupted:
            self.interrupted = True
            raise Interrupted(signum)
