"""A program that uses capsudo.core's library as its documentation shows: mypy --strict checks it."""

from __future__ import annotations

import trio

from capsudo.core import (ClientError, CompletedSession, EndpointInfo, NotDescribed, SessionFailed, TlsOptions, describe,
                          describe_async, run, run_async)


def synchronous(tls: TlsOptions | None) -> tuple[int, bytes | None, bool]:
    result: CompletedSession = run(["id", "-u"], endpoint="/run/cap/id", capture_output=True, max_output=4096,
                                   timeout=5.0, tls=tls, check=False)
    return result.status, result.stdout, result.stdout_truncated


async def asynchronous() -> str:
    try:
        result = await run_async(["true"], endpoint="tcp://127.0.0.1:4000", input=b"", check=True)
    except SessionFailed as failed:
        return f"status {failed.result.status}"
    except ClientError as exc:
        return str(exc)
    return "" if result.signal is None else f"signal {result.signal}"


def described() -> list[str] | None:
    try:
        info: EndpointInfo = describe("/run/cap/id", timeout=1.0)
    except NotDescribed:
        return None
    return info.command


async def described_inside_trio() -> bool:
    info = await describe_async("/run/cap/id")
    return info.arguments == "pinned" and not info.password


def main() -> None:
    trio.run(asynchronous)
    trio.run(described_inside_trio)
