"""Filing a capability request on capsudod's control socket (its `request` command, docs/control.md)."""

from __future__ import annotations

from typing import Any

from capsudo.ctl import exchange


class RequestRefused(Exception):
    """The control socket could not be reached, or refused the request; one line for the agent."""


def file_request(path: str, *, what: str, why: str, duration: str, timeout: float = 10.0) -> dict[str, Any]:
    request = {"command": "request", "what": what, "why": why, "for": duration}
    try:
        response = exchange(path, request, timeout)
    except OSError as exc:
        raise RequestRefused(f"cannot reach the control socket {path}: {exc.strerror or exc}") from None
    if not isinstance(response, dict) or not response.get("ok"):
        error = response.get("error") if isinstance(response, dict) else None
        raise RequestRefused(str(error or "the daemon gave no answer"))
    return response
