"""A session through capsudo-mcp (a tool call to its result) beside the same session through the library.

One daemon serving `echo`; in one run, interleaved: `run_capability` called
with the SDK's own client over stdio on one capsudo-mcp process (started
once), and `capsudo.core.run` with the output read from a pipe, as the
server does. The difference is what MCP adds: JSON-RPC over two pipes,
the SDK's validation, the worker thread and the structured result.
Target: the tool call's median at most 20 ms.

    .venv/bin/python benchmarks/mcp_session.py [SESSIONS]
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import trio
from _harness import Daemon, Verdict, median, ms, percentile, table
from mcp import Client, StdioServerParameters

from capsudo.core import run

SESSIONS = int(sys.argv[1]) if len(sys.argv) > 1 else 300
WARMUP = 20
TARGET = 0.020
DEVNULL = -1
CAPSUDO_MCP = str(Path(sys.executable).parent / "capsudo-mcp")


def library_session(endpoint: str) -> bytes:
    read_end, write_end = os.pipe()
    try:
        result = run(["hello"], endpoint=endpoint, stdin=DEVNULL, stdout=write_end, stderr=write_end)
    finally:
        os.close(write_end)
    with os.fdopen(read_end, "rb") as output:
        data = output.read()
    if result.status != 0:
        raise RuntimeError(f"session failed: {result}")
    return data


async def measure(endpoint: str) -> tuple[list[float], list[float]]:
    tool_times: list[float] = []
    library_times: list[float] = []
    params = StdioServerParameters(command=CAPSUDO_MCP, args=["--endpoint", f"echo={endpoint}"])
    async with Client(params) as client:
        for number in range(WARMUP + SESSIONS):
            start = time.perf_counter()
            result = await client.call_tool("run_capability", {"capability": "echo", "arguments": ["hello"]})
            tool = time.perf_counter() - start
            if result.is_error or result.structured_content["stdout"] != "hello\n":
                raise RuntimeError(f"tool call failed: {result}")

            start = time.perf_counter()
            if library_session(endpoint) != b"hello\n":
                raise RuntimeError("the library's session printed something else")
            library = time.perf_counter() - start
            if number >= WARMUP:
                tool_times.append(tool)
                library_times.append(library)
    return tool_times, library_times


def main() -> int:
    verdict = Verdict("one session through capsudo-mcp")
    global DEVNULL
    DEVNULL = os.open(os.devnull, os.O_RDONLY)
    with Daemon("--", "/bin/echo") as daemon:
        tool_times, library_times = trio.run(measure, daemon.socket)
    print(
        table(
            [f"{SESSIONS} times each, interleaved", "median", "p90"],
            [
                ['MCP call_tool("run_capability", echo hello)', ms(median(tool_times)), ms(percentile(tool_times, 0.9))],
                ['core.run(["hello"]) with output from a pipe', ms(median(library_times)),
                 ms(percentile(library_times, 0.9))],
            ],
        )
    )
    subject = median(tool_times)
    verdict.check(f"median <= {ms(TARGET)}", ms(subject), subject <= TARGET)
    return verdict.finish()


if __name__ == "__main__":
    sys.exit(main())
