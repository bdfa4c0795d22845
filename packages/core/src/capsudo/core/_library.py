"""Running sessions from a Python program, without a process per call."""

from __future__ import annotations

from collections.abc import Sequence
from typing import IO, Union

from ._client_request import ClientError, ClientRequest, default_endpoint
from ._unix_client import SecretPrompt, SessionResult, run_unix_session

Descriptor = Union[int, IO, None]


def _fileno(value: Descriptor, default: int) -> int:
    if value is None:
        return default
    return value if isinstance(value, int) else value.fileno()


def run(
    argv: Sequence[str],
    *,
    endpoint: str | None = None,
    env: Sequence[str] = (),
    stdin: Descriptor = None,
    stdout: Descriptor = None,
    stderr: Descriptor = None,
    ask_secret: SecretPrompt | None = None,
) -> SessionResult:
    """Run argv through the endpoint and wait for its status.

    stdin, stdout and stderr are descriptors or file objects (None: this
    process's own); the program reads and writes them directly. `env` holds
    KEY=VALUE entries, which the endpoint may override or ignore. The daemon's
    error texts come back in the result; failing to reach it raises ClientError.
    """
    endpoint = endpoint or default_endpoint()
    request = ClientRequest(
        argv=list(argv),
        env_entries=list(env),
        stdio=(_fileno(stdin, 0), _fileno(stdout, 1), _fileno(stderr, 2)),
    )
    if "://" in endpoint and not endpoint.startswith("unix://"):
        raise ClientError(f"{endpoint}: only Unix endpoints are supported by this call")
    path = endpoint.removeprefix("unix://")
    return run_unix_session(path, request, ask_secret)
