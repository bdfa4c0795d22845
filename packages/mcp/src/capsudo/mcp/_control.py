"""Filing a capability request on capsudod's control socket (its `request` command, docs/control.md)."""

from __future__ import annotations

import json
import socket
from typing import Any


class RequestRefused(Exception):
    """The control socket could not be reached, or refused the request; one line for the agent."""


def file_request(path: str, *, what: str, why: str, duration: str, timeout: float = 10.0) -> dict[str, Any]:
    request = {"command": "request", "what": what, "why": why, "for": duration}
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            try:
                sock.sendall(json.dumps(request).encode() + b"\n")
            except (BrokenPipeError, ConnectionResetError):
                pass  # a refusal comes before the request is read, and is still there to read
            buffer = bytearray()
            while b"\n" not in buffer:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                buffer += chunk
    except OSError as exc:
        raise RequestRefused(f"cannot reach the control socket {path}: {exc.strerror or exc}") from None
    try:
        response = json.loads(buffer.partition(b"\n")[0])
    except ValueError:
        raise RequestRefused("the control socket's answer is not JSON") from None
    if not isinstance(response, dict) or not response.get("ok"):
        error = response.get("error") if isinstance(response, dict) else None
        raise RequestRefused(str(error or "the daemon gave no answer"))
    return response
