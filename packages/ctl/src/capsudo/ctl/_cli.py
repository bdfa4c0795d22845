"""`capsudoctl [-S SOCKET] [--json] COMMAND …`: one request to the control socket, its answer printed.

The grant command takes capsudod's own options (the same table, so a grant
has every field a file endpoint has), with `--listen` for the address,
`--for` for its lifetime and `--script FILE` for a script whose content is
sent and pinned by its SHA-256. Exit status: 0 done, 1 the daemon refused or
failed the request, 2 a wrong command line, 3 the control socket cannot be
reached.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import sys
from typing import NamedTuple

from capsudo.core import (FLAG, SECONDS, TEXT, Option, UsageError, command_line_status, daemon_options,
                          read_command_line, usage_error)

DEFAULT_CONTROL = "/run/capsudo/control"
REACH_FAILURE = 3
REQUEST_FAILED = 1

USAGE = """\
usage: capsudoctl [-S SOCKET] [--json] COMMAND ...

commands:
  list                          endpoints: pins, owner and mode, expiry, uses left, sessions
  grant NAME --listen PATH [--for DURATION] [--uses N] [--owner U[:G]] [--mode M]
        [--user U] [capsudod's options] [--script FILE] [-- COMMAND...]
                                an endpoint made now, for a while or a number of uses
  renew NAME --for DURATION [--uses N]
  revoke NAME                   its socket goes, its running programs are hung up
  sessions                      the sessions under way
  kill SESSION                  hang one session's program up
  pending                       requests waiting for approval, with everything known of each
  approve ID [--for DURATION]   run that request; --for: approve that endpoint for that caller
                                for a while too
  deny ID [--reason TEXT]       refuse it; the caller reads the reason
  watch                         a full-screen view of requests as they arrive, deciding with one key
  requests                      capabilities asked for (capsudo-mcp's request_capability), pending or decided
  grant NAME --request ID ...   grant one of them (the grant's own options say what is granted)
  decline ID                    decline one

  -S, --control SOCKET  the control socket (default: $CAPSUDO_CONTROL, else /run/capsudo/control)
  --json                print the daemon's answer as JSON, for programs
  -h, --help            show this help
  -V, --version         show the version

exit status: 0 done, 1 refused or failed by the daemon, 2 a wrong command line,
3 the control socket cannot be reached.
"""


# Before the command; -h and -V come with every table.
GLOBAL_OPTIONS = [
    Option("control", TEXT, None, "the control socket", short="S", metavar="SOCKET",
           default_text="$CAPSUDO_CONTROL, else " + DEFAULT_CONTROL),
    Option("json", FLAG, False, "print the daemon's answer as JSON, for programs"),
]


class Command(NamedTuple):
    """A command of the control socket: its operands, then its options; `grant` then takes a program."""

    name: str
    operands: tuple[str, ...]
    options: list[Option]
    takes_program: bool
    help: str


def control_commands() -> list[Command]:
    """What capsudoctl's parser knows after the global options, in -h order."""
    return [
        Command("list", (), [], False, "endpoints: pins, owner and mode, expiry, uses left, sessions"),
        Command("grant", ("NAME",), grant_options(), True, "an endpoint made now, for a while or a number of uses"),
        Command("renew", ("NAME",), renew_options(), False, "a new expiry for a grant, counted from now"),
        Command("revoke", ("NAME",), [], False, "its socket goes, its running programs are hung up"),
        Command("sessions", (), [], False, "the sessions under way"),
        Command("kill", ("SESSION",), [], False, "hang one session's program up"),
        Command("pending", (), [], False, "requests waiting for approval, with everything known of each"),
        Command("approve", ("ID",), approve_options(), False, "run that request"),
        Command("deny", ("ID",), deny_options(), False, "refuse it; the caller reads the reason"),
        Command("watch", (), [], False, "a full-screen view of requests as they arrive, deciding with one key"),
        Command("requests", (), [], False, "capabilities asked for (capsudo-mcp's request_capability), pending or "
                "decided"),
        Command("decline", ("ID",), [], False, "decline one of them"),
    ]


def approve_options() -> list[Option]:
    return [Option("for", SECONDS, None, "approve that endpoint for that caller for a while too",
                   metavar="DURATION", default_text="this request only")]


def deny_options() -> list[Option]:
    return [Option("reason", TEXT, None, "what the caller reads", metavar="TEXT", default_text="none")]


def _command_names() -> str:
    return ", ".join(command.name for command in control_commands())


def renew_options() -> list[Option]:
    by_name = {option.name: option for option in grant_options()}
    return [by_name["for"].replace(help="the grant's new lifetime, from now"), by_name["uses"]]


def grant_options() -> list[Option]:
    """capsudod's options with --listen for -S, the lifetime as --for, and --script."""
    options = [option for option in daemon_options() if option.name not in ("endpoint", "expires")]
    return [
        Option("listen", TEXT, None, "the address to serve the grant on", metavar="ADDRESS"),
        Option("for", SECONDS, None, "how long the grant lasts", metavar="DURATION"),
        Option("script", TEXT, None, "run a copy of this file, pinned by its SHA-256", metavar="FILE"),
        Option("request", TEXT, None, "the pending request this grant answers", metavar="ID"),
        *options,
    ]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parsed = read_command_line(GLOBAL_OPTIONS, argv)
        status = command_line_status("capsudoctl", USAGE, parsed)
        if status is not None:
            return status
        values, _, operands = parsed
        if not operands:
            raise UsageError(f"which command? {_command_names()}")
        control = values.get("control") or os.environ.get("CAPSUDO_CONTROL") or DEFAULT_CONTROL
        as_json = bool(values.get("json"))
        command, rest = operands[0], operands[1:]
        request = _request(command, rest)
    except UsageError as exc:
        return usage_error("capsudoctl", exc)
    except OSError as exc:
        sys.stderr.write(f"capsudoctl: error: {exc.filename}: {exc.strerror}\n")
        return REQUEST_FAILED
    if command == "watch":
        from ._watch import watch

        return watch(control)
    try:
        response = exchange(control, request)
    except OSError as exc:
        sys.stderr.write(f"capsudoctl: error: cannot reach the control socket {control}: {exc.strerror or exc}\n")
        return REACH_FAILURE
    if not response.get("ok"):
        if as_json:
            sys.stdout.write(json.dumps(response) + "\n")
        sys.stderr.write(f"capsudoctl: error: {response.get('error', 'the daemon gave no answer')}\n")
        return REQUEST_FAILED
    sys.stdout.write(json.dumps(response) + "\n" if as_json else _for_people(command, response))
    return 0


def _request(command: str, rest: list[str]) -> dict:
    if command in ("list", "sessions", "requests"):
        if rest:
            raise UsageError(f"{command} takes no operands, got {rest[0]!r}")
        return {"command": command}
    if command in ("revoke", "kill", "decline"):
        operand = {"revoke": "name", "kill": "session", "decline": "request"}[command]
        if len(rest) != 1:
            raise UsageError(f"{command} takes one {'ID' if operand == 'request' else operand.upper()}")
        return {"command": command, operand: rest[0]}
    if command == "renew":
        if not rest or rest[0].startswith("-"):
            raise UsageError("renew takes NAME --for DURATION")
        values, _, operands = read_command_line(renew_options(), rest[1:])
        if values is None or values == "version" or operands or "for" not in values:
            raise UsageError("renew takes NAME --for DURATION [--uses N]")
        return {"command": "renew", "name": rest[0], **values}
    if command == "grant":
        return _grant(rest)
    if command in ("pending", "watch"):
        if rest:
            raise UsageError(f"{command} takes no operands, got {rest[0]!r}")
        return {"command": command}
    if command in ("approve", "deny"):
        table = approve_options() if command == "approve" else deny_options()
        usage = "approve takes ID [--for DURATION]" if command == "approve" else "deny takes ID [--reason TEXT]"
        if not rest or rest[0].startswith("-"):
            raise UsageError(usage)
        values, _, operands = read_command_line(table, rest[1:])
        if values is None or values == "version" or operands:
            raise UsageError(usage)
        return {"command": command, "id": rest[0], **values}
    raise UsageError(f"unknown command {command!r} ({_command_names()})")


def _grant(rest: list[str]) -> dict:
    if not rest or rest[0].startswith("-"):
        raise UsageError("grant takes NAME --listen PATH [options] [-- COMMAND...]")
    name = rest[0]
    values, labels, program = read_command_line(grant_options(), rest[1:])
    if values is None or values == "version":
        raise UsageError("grant takes NAME --listen PATH [options] [-- COMMAND...]")
    if "listen" not in values:
        raise UsageError("grant needs --listen PATH, where the grant's socket goes")
    request: dict = {"command": "grant", "name": name}
    fields = {("endpoint" if key == "listen" else key): value for key, value in values.items()
              if key not in ("for", "script", "request")}
    for key in ("for", "request"):
        if key in values:
            request[key] = values[key]
    if "script" in values:
        with open(values["script"], "rb") as file:
            request["script"] = base64.b64encode(file.read()).decode("ascii")
    elif not program:
        raise UsageError("grant needs -- COMMAND... or --script FILE: what the grant runs")
    if program:
        fields["program"] = program
    request["fields"] = fields
    return request


def exchange(path: str, request: dict, timeout: float = 30.0) -> dict:
    """Send one request line, read one response line. Raises OSError."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        try:
            sock.sendall(json.dumps(request).encode() + b"\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # a refusal is sent before the request is read: it is still there to read
        buffer = bytearray()
        while b"\n" not in buffer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            buffer += chunk
    if not buffer:
        return {"ok": False, "error": "the daemon closed the connection without an answer"}
    try:
        return json.loads(buffer.partition(b"\n")[0])
    except ValueError:
        return {"ok": False, "error": "the daemon's answer is not JSON"}


def _for_people(command: str, response: dict) -> str:
    if command == "list":
        rows = [("NAME", "KIND", "ADDRESS", "PINS", "OWNER/MODE", "EXPIRES", "USES", "SESSIONS", "STATE", "SCRIPT")]
        for entry in response["endpoints"]:
            pins = ",".join(what for what, pinned in entry["pins"].items() if pinned) or "prefix"
            owner = entry["owner"]
            owned = f"{owner['uid'] if owner and owner['uid'] is not None else '-'}:" \
                    f"{owner['gid'] if owner and owner['gid'] is not None else '-'}/{entry['mode']}"
            uses = "-" if entry["uses_left"] is None else str(entry["uses_left"])
            rows.append((entry["name"], entry["kind"], entry["address"], pins, owned, entry["expires"] or "never",
                         uses, str(entry["sessions"]), entry["state"], entry["script"] or "-"))
        return _table(rows)
    if command == "sessions":
        rows = [("SESSION", "ENDPOINT", "USER", "PID", "SINCE", "COMMAND")]
        for entry in response["sessions"]:
            rows.append((entry["id"], entry["endpoint"] or "-", entry["user"] or "-", str(entry["program_pid"] or "-"),
                         entry["since"], " ".join(entry["argv"])))
        return _table(rows)
    if command == "grant":
        lines = [f"granted {response['name']} on {response['address']}"
                 + (f", answering request {response['request']}" if response.get("request") else "")]
        lines.append(f"expires {response['expires'] or 'never'}, "
                     f"{response['uses_left'] if response['uses_left'] is not None else 'unlimited'} use(s)")
        if response.get("script"):
            lines.append(f"script sha256 {response['script']}")
        return "\n".join(lines) + "\n"
    if command == "requests":
        rows = [("REQUEST", "STATE", "USER", "SINCE", "FOR", "WHAT", "WHY")]
        for entry in response["requests"]:
            state = f"granted as {entry['grant']}" if entry["grant"] else entry["state"]
            rows.append((entry["id"], state, entry["user"] or "-", entry["since"], entry["for"], entry["what"],
                         entry["why"]))
        return _table(rows)
    if command == "decline":
        return f"declined request {response['request']}\n"
    if command == "renew":
        return f"renewed {response['name']}: expires {response['expires']}\n"
    if command == "revoke":
        return f"revoked {response['name']}\n"
    if command == "pending":
        from ._shown import details

        return "".join("\n".join(details(request)) + "\n\n" for request in response["pending"]) \
            or "no pending request\n"
    if command in ("approve", "deny"):
        standing = f"; endpoint {response['endpoint']} approved for this caller until {response['standing_until']}" \
            if response.get("standing_until") else ""
        return f"{response['state']} request {response['id']}{standing}\n"
    return f"hung up session {response['session']}\n"


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return "".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() + "\n" for row in rows)
