"""Running sessions from a Python program, without a process per call.

The endpoint takes the same addresses as `capsudo -S`. `run_async` is
trio-native and works over every endpoint kind; `run` is the same call for
code without an event loop, safe from any thread: it installs no signal
handler, and over a Unix socket without captured output it needs no loop at
all. A timeout or the caller's cancellation closes the connection, which is
the protocol's hang-up: the daemon sends the program SIGHUP, then SIGKILL.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import IO, TYPE_CHECKING, Union

from ._client_request import ClientError, ClientRequest, default_endpoint
from ._unix_client import SessionResult

if TYPE_CHECKING:
    from capsudo.transport import MessageChannel, TlsOptions

    from ._describe_client import EndpointInfo

Descriptor = Union[int, IO[bytes], IO[str], None]
SecretPrompt = Callable[[str], bytes]

#: Bytes of each captured stream kept; the rest is read and dropped.
DEFAULT_MAX_OUTPUT = 1024 * 1024


class CompletedSession(SessionResult):
    """A session's outcome: its status and the daemon's error texts, and its output when captured.

    `stdout` and `stderr` are None unless captured; a `*_truncated` flag
    says the stream went past the cap and only its first bytes are kept.
    """

    __slots__ = ("stdout", "stderr", "stdout_truncated", "stderr_truncated", "duration")

    def __init__(self, status: int, errors: list[str] | None = None, stdout: bytes | None = None,
                 stderr: bytes | None = None, stdout_truncated: bool = False, stderr_truncated: bool = False,
                 duration: float = 0.0) -> None:
        super().__init__(status, errors)
        self.stdout = stdout
        self.stderr = stderr
        self.stdout_truncated = stdout_truncated
        self.stderr_truncated = stderr_truncated
        self.duration = duration

    @property
    def signal(self) -> int | None:
        """The signal that ended the program (status 128 + N), else None."""
        return self.status - 128 if 128 < self.status < 128 + 65 else None

    def __repr__(self) -> str:
        return (f"CompletedSession(status={self.status!r}, errors={self.errors!r}, stdout={self.stdout!r}, "
                f"stderr={self.stderr!r})")


class SessionFailed(ClientError):
    """`check=True` and the program's status was not 0; the result is attached."""

    def __init__(self, result: CompletedSession) -> None:
        why = f": {result.errors[-1]}" if result.errors else ""
        super().__init__(f"the program exited with status {result.status}{why}", result.status)
        self.result = result


def _argv(argv: Sequence[str]) -> list[str]:
    if isinstance(argv, (str, bytes)):
        raise TypeError(f"argv is a sequence of strings such as ['ls', '-l'], not the string {argv!r}")
    words = list(argv)
    if not all(isinstance(word, str) for word in words):
        raise TypeError("argv holds strings only")
    return words


def _fileno(value: Descriptor, default: int) -> int:
    if value is None:
        return default
    return value if isinstance(value, int) else value.fileno()


class _Capture:
    """A pipe whose write end the program gets and whose read end we drain, keeping up to a cap."""

    def __init__(self, cap: int) -> None:
        self.read_end, self.write_end = os.pipe2(os.O_CLOEXEC)
        self.cap = cap
        self.kept = bytearray()
        self.truncated = False

    async def drain(self) -> None:
        import trio

        async with trio.lowlevel.FdStream(self.read_end) as stream:
            while chunk := await stream.receive_some(65536):
                room = self.cap - len(self.kept)
                if len(chunk) > room:
                    self.truncated = True
                self.kept += chunk[:max(room, 0)]

    def close_write_end(self) -> None:
        if self.write_end >= 0:
            os.close(self.write_end)
            self.write_end = -1


async def _feed(fd: int, data: bytes) -> None:
    import trio

    async with trio.lowlevel.FdStream(fd) as stream:
        try:
            await stream.send_all(data)
        except trio.BrokenResourceError:
            pass  # the program did not read it all: its choice


def _connector(endpoint: str, tls: TlsOptions | None) -> Callable[[], Awaitable[MessageChannel]]:
    from capsudo.transport import EndpointError, TlsEndpoint, TlsOptions, connect_endpoint, parse_endpoint

    try:
        if tls is None and isinstance(parse_endpoint(endpoint), TlsEndpoint):
            tls = TlsOptions.from_environment()
    except ValueError as exc:
        raise ClientError(str(exc)) from None

    async def connect() -> MessageChannel:
        try:
            return await connect_endpoint(endpoint, tls)
        except (EndpointError, ValueError) as exc:
            raise ClientError(str(exc)) from None

    return connect


async def run_async(
    argv: Sequence[str],
    *,
    endpoint: str | None = None,
    env: Sequence[str] = (),
    stdin: Descriptor = None,
    stdout: Descriptor = None,
    stderr: Descriptor = None,
    input: bytes | None = None,
    capture_output: bool = False,
    max_output: int = DEFAULT_MAX_OUTPUT,
    check: bool = False,
    timeout: float | None = None,
    ask_secret: SecretPrompt | None = None,
    tls: TlsOptions | None = None,
) -> CompletedSession:
    """Run argv through the endpoint inside trio and return its outcome.

    stdin, stdout and stderr are descriptors or file objects (None: this
    process's own); `input` is bytes for the program's stdin instead, and
    `capture_output` keeps up to `max_output` bytes of each of stdout and
    stderr in the result. `env` holds KEY=VALUE entries, which the endpoint
    may override or ignore. Past `timeout` seconds, or when the caller's
    scope is cancelled, the connection closes and the daemon hangs the
    program up; a timeout raises TimeoutError. Failing to reach the daemon
    raises ClientError; with `check`, a status other than 0 raises
    SessionFailed. For tls://, `tls` names our certificate, key and the
    daemon's CA (default: CAPSUDO_TLS_CERT, CAPSUDO_TLS_KEY, CAPSUDO_TLS_CA).
    """
    import trio

    from ._channel_client import run_channel_session
    from ._password_flow import PasswordFlow

    words = _argv(argv)
    connect = _connector(endpoint or default_endpoint(), tls)
    captures = (_Capture(max_output), _Capture(max_output)) if capture_output else None
    feed = os.pipe2(os.O_CLOEXEC) if input is not None else None
    stdio = (
        feed[0] if feed is not None else _fileno(stdin, 0),
        captures[0].write_end if captures else _fileno(stdout, 1),
        captures[1].write_end if captures else _fileno(stderr, 2),
    )
    request = ClientRequest(argv=words, env_entries=list(env), stdio=stdio)
    clock = time.monotonic()
    try:
        with trio.fail_after(timeout) if timeout is not None else trio.CancelScope():
            async with trio.open_nursery() as nursery:
                if captures:
                    for capture in captures:
                        nursery.start_soon(capture.drain)
                if feed is not None and input is not None:
                    nursery.start_soon(_feed, feed[1], input)
                    feed = (feed[0], -1)  # _feed's stream owns and closes it
                try:
                    outcome = await run_channel_session(connect, request, PasswordFlow(ask_secret),
                                                        watch_signals=False)
                finally:
                    # The program (or the channel) holds its own copies; ours
                    # would keep the drains from ever seeing end-of-file.
                    if captures:
                        for capture in captures:
                            capture.close_write_end()
                    if feed is not None:
                        os.close(feed[0])
                        feed = None
    except trio.TooSlowError:
        raise TimeoutError(f"the session did not finish within {timeout:g} s; the program was hung up") from None
    except BaseExceptionGroup as group:
        # The nursery wraps what the session raised: the caller gets the error itself.
        raise _sole_error(group) from None
    finally:
        if captures:
            for capture in captures:
                capture.close_write_end()
        if feed is not None:
            os.close(feed[0])
    result = CompletedSession(
        outcome.status, outcome.errors,
        bytes(captures[0].kept) if captures else None, bytes(captures[1].kept) if captures else None,
        captures[0].truncated if captures else False, captures[1].truncated if captures else False,
        time.monotonic() - clock,
    )
    if check and result.status != 0:
        raise SessionFailed(result)
    return result


def _sole_error(group: BaseExceptionGroup) -> BaseException:
    """The one error in a nursery's group (the others being cancellations), else the group."""
    import trio

    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        error = pending.pop()
        if isinstance(error, BaseExceptionGroup):
            pending.extend(error.exceptions)
        elif not isinstance(error, trio.Cancelled):
            leaves.append(error)
    return leaves[0] if len(leaves) == 1 else group


def _refuse_inside_trio(name: str) -> None:
    if "trio" not in sys.modules:
        return
    import trio

    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return
    raise RuntimeError(f"capsudo.core.{name}() was called inside trio: await capsudo.core.{name}_async() there")


def run(
    argv: Sequence[str],
    *,
    endpoint: str | None = None,
    env: Sequence[str] = (),
    stdin: Descriptor = None,
    stdout: Descriptor = None,
    stderr: Descriptor = None,
    input: bytes | None = None,
    capture_output: bool = False,
    max_output: int = DEFAULT_MAX_OUTPUT,
    check: bool = False,
    timeout: float | None = None,
    ask_secret: SecretPrompt | None = None,
    tls: TlsOptions | None = None,
) -> CompletedSession:
    """Run argv through the endpoint and wait for its outcome; the arguments are run_async's.

    Safe from any thread, several at once. Over a Unix socket with the
    program on given descriptors and no timeout, the call needs no event
    loop; otherwise it runs trio on a loop of its own in the calling thread,
    so it cannot be called from inside trio (await run_async there).
    """
    words = _argv(argv)
    endpoint = endpoint or default_endpoint()
    if not (capture_output or input is not None or timeout is not None):
        from capsudo.transport import parse_endpoint

        try:
            parsed = parse_endpoint(endpoint)
        except ValueError as exc:
            raise ClientError(str(exc)) from None
        if parsed.passes_descriptors:  # a Unix socket, whose str() is its path
            from ._unix_client import run_unix_session

            clock = time.monotonic()
            request = ClientRequest(words, list(env), stdio=(_fileno(stdin, 0), _fileno(stdout, 1), _fileno(stderr, 2)))
            outcome = run_unix_session(str(parsed), request, ask_secret)
            result = CompletedSession(outcome.status, outcome.errors, duration=time.monotonic() - clock)
            if check and result.status != 0:
                raise SessionFailed(result)
            return result
    _refuse_inside_trio("run")
    import functools

    import trio

    call = functools.partial(run_async, words, endpoint=endpoint, env=env, stdin=stdin, stdout=stdout,
                             stderr=stderr, input=input, capture_output=capture_output, max_output=max_output,
                             check=check, timeout=timeout, ask_secret=ask_secret, tls=tls)
    return trio.run(call)


async def describe_async(endpoint: str | None = None, *, timeout: float = 5.0, ask_secret: SecretPrompt | None = None,
                         tls: TlsOptions | None = None) -> EndpointInfo:
    """What the endpoint says it does (`capsudo -l`), inside trio.

    Raises NotDescribed when the endpoint does not describe itself (a daemon
    that does not know the extension, or one that did not answer within
    `timeout` seconds), ClientError when it cannot be reached.
    """
    from ._describe_client import describe_channel

    return await describe_channel(_connector(endpoint or default_endpoint(), tls), timeout, ask_secret)


def describe(endpoint: str | None = None, *, timeout: float = 5.0, ask_secret: SecretPrompt | None = None,
             tls: TlsOptions | None = None) -> EndpointInfo:
    """describe_async for code without an event loop; safe from any thread."""
    _refuse_inside_trio("describe")
    import functools

    import trio

    return trio.run(functools.partial(describe_async, endpoint, timeout=timeout, ask_secret=ask_secret, tls=tls))

