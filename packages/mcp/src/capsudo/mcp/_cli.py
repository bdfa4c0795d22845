"""`capsudo-mcp`: the MCP server on stdio, holding the endpoints its command line names.

The server runs on trio, through anyio's trio backend: capsudo's own code
is trio, and the library's sessions and descriptions are awaited on the
server's loop, without a thread.
"""

from __future__ import annotations

import argparse
import os
import re
import sys

from ._holdings import Holdings
from ._server import Limits

DEFAULT_CONTROL = "/run/capsudo/control"
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)?$")
_SIZE = re.compile(r"^(\d+)([KMG]i?B?|B)?$", re.I)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"capsudo-mcp: error: {message}\n")
        raise SystemExit(2)


def _named(raw: str) -> tuple[str, str]:
    name, sep, value = raw.partition("=")
    if not sep or not _NAME.match(name) or not value:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE with a name of letters, digits and _ . @ -, got {raw!r}")
    return name, value


def _seconds(raw: str) -> float:
    match = _DURATION.match(raw)
    if not match or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"expected a duration such as 30s, 500ms, 5m, got {raw!r}")
    return float(match.group(1)) * {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600}[match.group(2)]


def _bytes(raw: str) -> int:
    match = _SIZE.match(raw)
    if not match:
        raise argparse.ArgumentTypeError(f"expected a size such as 65536, 64K, 1M, got {raw!r}")
    unit = (match.group(2) or "B")[0].upper()
    return int(match.group(1)) * {"B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[unit]


def parser() -> argparse.ArgumentParser:
    limits = Limits()
    p = _Parser(prog="capsudo-mcp", description="An MCP server on stdio that offers an agent the capsudo "
                "endpoints it holds, and nothing else.")
    p.add_argument("--endpoint", action="append", type=_named, default=[], metavar="NAME=ADDRESS",
                   help="a capability held: its name and its address (as capsudo -S takes it); repeatable")
    p.add_argument("--endpoints-dir", action="append", default=[], metavar="DIR",
                   help="hold every socket in DIR, named by its file name (read again at each call)")
    p.add_argument("--description", action="append", type=_named, default=[], metavar="NAME=TEXT",
                   help="what the capability does, over what the endpoint says (for one that does not describe itself)")
    p.add_argument("--pinned", action="append", default=[], metavar="NAME",
                   help="the capability pins its command, whatever the endpoint says: arguments to it are refused, "
                        "not ignored (for an endpoint that does not describe itself, such as capsudo-rs's)")
    p.add_argument("--control", default=os.environ.get("CAPSUDO_CONTROL") or DEFAULT_CONTROL, metavar="SOCKET",
                   help="capsudod's control socket, where request_capability files requests "
                        f"(default: $CAPSUDO_CONTROL, else {DEFAULT_CONTROL})")
    p.add_argument("--max-output", type=_bytes, default=limits.max_output, metavar="BYTES",
                   help=f"bytes kept of each of stdout and stderr (default: {limits.max_output})")
    p.add_argument("--max-stdin", type=_bytes, default=limits.max_stdin, metavar="BYTES",
                   help=f"largest stdin a call may send (default: {limits.max_stdin})")
    p.add_argument("--timeout", type=_seconds, default=limits.default_timeout, metavar="DURATION",
                   help=f"a session's timeout when the call names none (default: {limits.default_timeout:g}s)")
    p.add_argument("--max-timeout", type=_seconds, default=limits.max_timeout, metavar="DURATION",
                   help=f"the longest timeout a call may ask for (default: {limits.max_timeout:g}s)")
    return p


def configure(argv: list[str]) -> tuple[Holdings, Limits, str]:
    args = parser().parse_args(argv)
    if not args.endpoint and not args.endpoints_dir:
        parser().error("no capability to hold: give --endpoint NAME=ADDRESS or --endpoints-dir DIR")
    for directory in args.endpoints_dir:
        if not os.path.isdir(directory):
            parser().error(f"--endpoints-dir {directory}: not a directory")
    holdings = Holdings(named=dict(args.endpoint), directories=list(args.endpoints_dir))
    for name, text in args.description:
        holdings.declared.setdefault(name, {})["description"] = text
    for name in args.pinned:
        holdings.declared.setdefault(name, {})["accepts_arguments"] = False
    limits = Limits(max_output=args.max_output, default_timeout=args.timeout, max_timeout=args.max_timeout,
                    max_stdin=args.max_stdin)
    return holdings, limits, args.control


def main(argv: list[str] | None = None) -> int:
    holdings, limits, control = configure(list(sys.argv[1:] if argv is None else argv))
    import anyio

    from ._server import build_server

    server = build_server(holdings, limits, control)
    try:
        anyio.run(server.run_stdio_async, backend="trio")
    except KeyboardInterrupt:
        return 130
    return 0
