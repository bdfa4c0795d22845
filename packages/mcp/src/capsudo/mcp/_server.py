"""The MCP server: three tools over the capabilities held, on the official SDK.

`list_capabilities` says what is held and what each describes,
`run_capability` runs one session and returns its status and capped output
as structured content with a text block beside it, `request_capability`
files a request that the operator sees with `capsudoctl requests`. A
failure is a tool error whose structured content has a code from _errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import trio
from mcp.server import MCPServer
from mcp.types import CallToolResult, TextContent

from ._control import RequestRefused, file_request
from ._errors import AgentError, classify_daemon_errors, classify_failure
from ._holdings import Holdings
from ._library import Outcome, describe_endpoint, run_session

INSTRUCTIONS = """\
This server holds capsudo capabilities: each is one privileged action on \
this machine that an operator has granted you (restart one service, read \
one log), and nothing else. Call list_capabilities to see what you hold \
and what each does; run_capability to use one; request_capability to ask \
a person for one you lack, saying what, why and for how long (ask for the \
narrowest: one pinned command, a short time, never a shell). A failed \
call has an error code and a next step: follow it, and never retry a \
refusal in a loop."""


@dataclass(frozen=True)
class Limits:
    max_output: int = 64 * 1024
    default_timeout: float = 60.0
    max_timeout: float = 600.0
    max_stdin: int = 1024 * 1024


def _failed(error: AgentError, **more: Any) -> CallToolResult:
    structured = {"error": error.as_dict(), **more}
    text = f"error {error.code}: {error.message}\nnext: {error.next_step}"
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=structured, is_error=True)


def _session_content(outcome: Outcome) -> dict[str, Any]:
    return {
        "exit_status": outcome.status,
        "signal": outcome.signal,
        "stdout": outcome.stdout.decode("utf-8", errors="replace"),
        "stdout_truncated": outcome.stdout_truncated,
        "stderr": outcome.stderr.decode("utf-8", errors="replace"),
        "stderr_truncated": outcome.stderr_truncated,
        "daemon_errors": outcome.errors,
        "duration_seconds": round(outcome.duration, 6),
        "session_id": outcome.session_id,
    }


def _session_text(name: str, content: dict[str, Any]) -> str:
    ended = f"signal {content['signal']}" if content["signal"] else f"exit status {content['exit_status']}"
    lines = [f"{name}: {ended} after {content['duration_seconds']:.3f}s"]
    for stream in ("stdout", "stderr"):
        if content[stream]:
            cut = " (truncated: only its first part is shown)" if content[stream + "_truncated"] else ""
            lines.append(f"--- {stream}{cut}\n{content[stream]}")
    lines.extend(f"capsudod: {line}" for line in content["daemon_errors"])
    return "\n".join(lines)


def build_server(holdings: Holdings, limits: Limits, control: str) -> MCPServer:
    server = MCPServer(name="capsudo", instructions=INSTRUCTIONS)

    @server.tool()
    async def list_capabilities() -> dict[str, Any]:
        """The capabilities held: for each, its name, address and what it describes of itself
        (description, whether it accepts arguments, pinned environment names, program, user, password
        or approval needed, expiry, uses left; "unknown" where it cannot tell)."""
        addresses = holdings.addresses()
        described: dict[str, dict[str, object]] = {}

        async def describe(name: str, address: str) -> None:
            described[name] = (await describe_endpoint(name, address, holdings.declared_for(name))).as_dict()

        async with trio.open_nursery() as nursery:
            for name, address in addresses.items():
                nursery.start_soon(describe, name, address)
        return {"capabilities": [described[name] for name in addresses]}

    @server.tool()
    async def run_capability(
        capability: str, arguments: list[str] | None = None, stdin: str = "", timeout: float | None = None
    ) -> CallToolResult:
        """Run one held capability: its name, the arguments to add (only if it accepts them), text for
        its standard input, and a timeout in seconds (which also bounds the wait for a person's approval,
        where the capability needs one). Returns the exit status (or the signal), stdout and stderr
        (capped, with truncation flags), the duration, and the daemon's messages."""
        arguments = list(arguments or [])
        address = holdings.addresses().get(capability)
        if address is None:
            return _failed(AgentError("unknown-capability", f"no capability named {capability!r} is held"))
        description = await describe_endpoint(capability, address, holdings.declared_for(capability))
        if arguments and description.accepts_arguments is False:
            return _failed(AgentError("refused-arguments", f"{capability} pins its command and would ignore "
                                      f"the arguments {arguments!r}; nothing was run"))
        data = stdin.encode()
        if len(data) > limits.max_stdin:
            return _failed(AgentError("refused", f"stdin is {len(data)} bytes, over the limit of {limits.max_stdin}"))
        seconds = limits.default_timeout if timeout is None else max(0.001, min(float(timeout), limits.max_timeout))
        outcome = await run_session(address, arguments, data, timeout=seconds, max_output=limits.max_output)
        content = _session_content(outcome)
        if outcome.timed_out and description.approval_needed is True:
            return _failed(AgentError("approval-pending", f"{capability} needs a person's approval and no decision "
                                      f"came within {seconds:g}s; the request was withdrawn (had one come late "
                                      f"in that time, the program was hung up at the timeout)"),
                           state="approval-pending", waited_seconds=seconds, **content)
        if outcome.timed_out:
            return _failed(AgentError("timeout", f"{capability} did not finish within {seconds:g}s"), **content)
        if outcome.failure is not None:
            return _failed(AgentError(classify_failure(outcome.failure), outcome.failure), **content)
        ended = classify_daemon_errors(outcome.errors)
        if ended is not None:
            return _failed(AgentError(ended, "; ".join(outcome.errors)), **content)
        text = _session_text(capability, content)
        return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=content,
                              is_error=False)

    @server.tool()
    def request_capability(what: str, why: str, duration: str = "15m") -> CallToolResult:
        """Ask the operator for a capability not held: what it should do (one narrow command), why you
        need it, and for how long (e.g. 10m). It becomes a pending request that a person grants or
        declines; a grant appears in list_capabilities. Do not file the same request twice."""
        try:
            response = file_request(control, what=what, why=why, duration=duration)
        except RequestRefused as exc:
            return _failed(AgentError("request-failed", str(exc)))
        content = {"request_id": response["id"], "state": response.get("state", "pending"),
                   "what": what, "why": why, "duration": duration}
        text = (f"request {content['request_id']} is pending: a person will grant or decline it "
                f"(capsudoctl requests). Do not ask again; check list_capabilities later.")
        return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=content)

    return server
