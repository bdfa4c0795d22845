"""Running sessions from a Python program, without a process per call.

The endpoint takes the same addresses as `capsudo -S`. A Unix socket hands
the descriptors over as they are; tcp://, tls:// and vsock:// carry their
bytes over the multiplexed channel, on an event loop of the call's own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import IO, Union

from ._client_request import ClientError, ClientRequest, default_endpoint

TYPE_CHECKING = False
if TYPE_CHECKING:
    from capsudo.transport import TlsOptions
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
    tls: TlsOptions | None = None,
) -> SessionResult:
    """Run argv through the endpoint and wait for its status.

    stdin, stdout and stderr are descriptors or file objects (None: this
    process's own); the program reads and writes them directly. `env` holds
    KEY=VALUE entries, which the endpoint may override or ignore. The daemon's
    error texts come back in the result; failing to reach it raises ClientError.

    For tls://, `tls` names our certificate, key and the daemon's CA; without
    it they come from CAPSUDO_TLS_CERT, CAPSUDO_TLS_KEY and CAPSUDO_TLS_CA.
    Over a network endpoint the call runs its own trio loop, so it cannot be
    made from inside one (use core.run_channel_session there).
    """
    endpoint = endpoint or default_endpoint()
    request = ClientRequest(
        argv=list(argv),
        env_entries=list(env),
        stdio=(_fileno(stdin, 0), _fileno(stdout, 1), _fileno(stderr, 2)),
    )
    from capsudo.transport import TlsEndpoint, TlsOptions, parse_endpoint

    try:
        parsed = parse_endpoint(endpoint)
        if parsed.passes_descriptors:
            return run_unix_session(parsed.path, request, ask_secret)
        if tls is None and isinstance(parsed, TlsEndpoint):
            tls = TlsOptions.from_environment()
    except ValueError as exc:
        raise ClientError(str(exc)) from None

    from ._channel_client import run_endpoint_session

    return run_endpoint_session(endpoint, request, tls, ask_secret)
