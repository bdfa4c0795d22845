"""A session through capsudo-mcp (a tool call to its result) beside the same session through the library.

One daemon serving `echo`; in one run, interleaved: `run_capability` called
with the SDK's own client over stdio on one capsudo-mcp process (started
once), and `capsudo.core.run_async` with its output captured, the call the
server makes. The difference is what MCP adds: JSON-RPC over two pipes,
the SDK's validation, the endpoint's description asked before each
session (one more connection) and the structured result.
Target: the tool call's median at most 20 ms.

    .venv/bin/python benchmarks/mcp_session.py [SESSIONS]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import trio
from _harness import Daemon, Verdict, median, ms, percentile, table
from mcp import Client, StdioServerParameters

from capsudo.core import run_async

SESSIONS = int(sys.argv[1]) if len(sys.argv) > 1 else 300
WARMUP = 20
TARGET = 0.020
CAPSUDO_MCP = str(Path(sys.executable).parent / "capsudo-mcp")


async def library_session(endpoint: str) -> bytes:
    result = await run_async(["hello"], endpoint=endpoint, input=b"", capture_output=True)
    if result.status != 0:
        raise RuntimeError(f"session failed: {result}")
    return result.stdout or b""


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
            if await library_session(endpoint) != b"hello\n":
                raise RuntimeError("the library's session printed something else")
            library = time.perf_counter() - start
            if number >= WARMUP:
                tool_times.append(tool)
                library_times.append(library)
    return tool_times, library_times


def main() -> int:
    verdict = Verdict("one session through capsudo-mcp")
    with Daemon("--", "/bin/echo") as daemon:
        tool_times, library_times = trio.run(measure, daemon.socket)
    print(
        table(
            [f"{SESSIONS} times each, interleaved", "median", "p90"],
            [
                ['MCP call_tool("run_capability", echo hello)', ms(median(tool_times)), ms(percentile(tool_times, 0.9))],
                ['core.run_async(["hello"]), output captured', ms(median(library_times)),
                 ms(percentile(library_times, 0.9))],
            ],
        )
    )
    subject = median(tool_times)
    verdict.check(f"median <= {ms(TARGET)}", ms(subject), subject <= TARGET)
    return verdict.finish()


if __name__ == "__main__":
    sys.exit(main())
