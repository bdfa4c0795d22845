"""The agent inside the sandbox, a script standing in for the model.

It does what a model would through capsudo-mcp (the SDK's stdio client,
the server a child of its own, both inside the sandbox): lists what it
holds, restarts the service, and then tries what it must not be able to
do, directly and through the server. It prints one JSON object: each
attempt and what came of it.
"""

from __future__ import annotations

import json
import os
import socket
import sys

import anyio
from mcp import Client, StdioServerParameters


def attempt(action) -> str:
    try:
        action()
    except OSError as exc:
        return f"refused: {exc.strerror or exc}"
    return "done"


def read(path: str) -> None:
    with open(path, "rb") as file:
        file.read(1)


def write(path: str) -> None:
    with open(path, "w") as file:
        file.write("agent was here\n")


def connect(path: str) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(path)


async def main(capsudo_mcp: str, other_socket: str) -> None:
    report: dict[str, object] = {"uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups()}
    params = StdioServerParameters(command=capsudo_mcp, args=["--endpoints-dir", "/run/cap"])
    async with Client(params) as client:
        held = await client.call_tool("list_capabilities", {})
        report["held"] = [entry["name"] for entry in held.structured_content["capabilities"]]
        restart = await client.call_tool("run_capability", {"capability": "restart-web"})
        report["restart"] = {"is_error": restart.is_error, "exit_status": restart.structured_content.get("exit_status"),
                             "stdout": restart.structured_content.get("stdout")}
        other = await client.call_tool("run_capability", {"capability": "shell"})
        report["unheld_through_server"] = other.structured_content["error"]["code"]
    report["read /etc/shadow"] = attempt(lambda: read("/etc/shadow"))
    report["list /root"] = sorted(os.listdir("/root")) if os.path.isdir("/root") else "absent"
    report["ssh keys"] = attempt(lambda: os.listdir(os.path.expanduser("~root/.ssh")))
    report["write /etc/agent"] = attempt(lambda: write("/etc/agent"))
    report["write /usr/agent"] = attempt(lambda: write("/usr/agent"))
    report["write own dir"] = attempt(lambda: write(os.path.join(os.environ["HOME"], "notes")))
    report["reach another socket"] = attempt(lambda: connect(other_socket))
    with open("/proc/self/status") as status:
        report["effective capabilities"] = next(line.split()[1] for line in status if line.startswith("CapEff"))
    print(json.dumps(report))


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2], backend="trio")
