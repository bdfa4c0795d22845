"""`capsudoctl watch`: the pending requests on a full screen, as they arrive, each decided with one key.

The view subscribes over the control socket (`watch`: one connection that
stays open, a line per request and per decision) and sends each decision on
a connection of its own, as `capsudoctl approve` would; several watchers may
run at once, and a request someone else decided leaves every screen with
who decided it. Keys: y approve, n or Enter deny, a approve this endpoint
for this caller for a while, ? details, up/down choose, q quit. A new
request rings the bell. curses gives the terminal back as it found it, on
q, on ^C and on an error alike.
"""

from __future__ import annotations

import curses
import json
import select
import socket
import time

from ._escape import escaped
from ._shown import details, summary

STANDING_DEFAULT = "15m"
_KEYS = "y approve  n/Enter deny  a approve endpoint for this caller for a while  ? details  q quit"


class _Lost(Exception):
    """The daemon closed the watch connection."""


def watch(control: str) -> int:
    import sys

    from ._cli import REACH_FAILURE

    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(control)
        sock.sendall(b'{"command": "watch"}\n')
        lines = _Lines(sock)
        first = lines.wait_one(10.0)
    except (OSError, _Lost) as exc:
        sys.stderr.write(f"capsudoctl: error: cannot reach the control socket {control}: "
                         f"{getattr(exc, 'strerror', None) or exc}\n")
        return REACH_FAILURE
    if not first.get("ok"):
        sys.stderr.write(f"capsudoctl: error: {first.get('error', 'the daemon refused to be watched')}\n")
        return 1
    try:
        curses.wrapper(lambda screen: _Screen(screen, lines, control).run())
    except _Lost:
        sys.stderr.write("capsudoctl: error: the daemon closed the watch connection\n")
        return 1
    except KeyboardInterrupt:
        pass
    return 0


class _Lines:
    """The watch connection's lines, read as they come without blocking the screen."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = bytearray()

    def ready(self) -> list[dict]:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise _Lost()
        self._buffer += chunk
        records = []
        while b"\n" in self._buffer:
            line, _, rest = bytes(self._buffer).partition(b"\n")
            self._buffer = bytearray(rest)
            records.append(json.loads(line))
        return records

    def wait_one(self, timeout: float) -> dict:
        self.sock.settimeout(timeout)
        try:
            while b"\n" not in self._buffer:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise _Lost()
                self._buffer += chunk
        finally:
            self.sock.settimeout(None)
        line, _, rest = bytes(self._buffer).partition(b"\n")
        self._buffer = bytearray(rest)
        return json.loads(line)


class _Screen:
    def __init__(self, screen, lines: _Lines, control: str) -> None:
        self.screen = screen
        self.lines = lines
        self.control = control
        #: id -> (request, the monotonic time its `left` was read)
        self.requests: dict[str, tuple[dict, float]] = {}
        self.selected = 0
        self.show_details = False
        self.status = "watching for requests"

    def run(self) -> None:
        curses.curs_set(0)
        self.screen.keypad(True)
        self.screen.nodelay(True)
        while True:
            self.draw()
            readable, _, _ = select.select([self.lines.sock, 0], [], [], 0.5)
            if self.lines.sock in readable:
                for record in self.lines.ready():
                    self.heard(record)
            if 0 in readable or not readable:
                key = self.screen.getch()
                while key != -1:
                    if self.key(key) is False:
                        return
                    key = self.screen.getch()

    def heard(self, record: dict) -> None:
        event = record.get("event")
        if event == "pending":
            request = record["request"]
            self.requests[request["id"]] = (request, time.monotonic())
            self.status = f"new request {request['id'][:8]} for {escaped(request['endpoint'])}"
            curses.beep()
        elif event == "ended":
            if self.requests.pop(record["id"], None) is not None:
                by = f" by {escaped(record['approver'])}" if record.get("approver") else ""
                self.status = f"request {record['id'][:8]} {record['state']}{by}"
            self.selected = min(self.selected, max(0, len(self.requests) - 1))
        elif event == "standing":
            self.status = (f"endpoint {escaped(record['endpoint'])} approved for uid {record['uid']} "
                           f"by {escaped(record['by'])}")

    def current(self) -> dict | None:
        ids = list(self.requests)
        return self.requests[ids[self.selected]][0] if ids else None

    def key(self, key: int) -> bool | None:
        if key in (ord("q"), ord("Q")):
            return False
        if key in (curses.KEY_DOWN, ord("j")):
            self.selected = min(self.selected + 1, max(0, len(self.requests) - 1))
        elif key in (curses.KEY_UP, ord("k")):
            self.selected = max(0, self.selected - 1)
        elif key == ord("?"):
            self.show_details = not self.show_details
        elif (request := self.current()) is not None:
            if key == ord("y"):
                self.decide({"command": "approve", "id": request["id"]})
            elif key in (ord("n"), 10, 13, curses.KEY_ENTER):
                self.decide({"command": "deny", "id": request["id"]})
            elif key == ord("a"):
                duration = self.ask(f"approve {request['endpoint']} for uid {request['uid']} for how long? "
                                    f"[{STANDING_DEFAULT}] ")
                if duration is not None:
                    self.decide({"command": "approve", "id": request["id"], "for": duration or STANDING_DEFAULT})
        return None

    def decide(self, request: dict) -> None:
        from ._cli import exchange

        try:
            response = exchange(self.control, request)
        except OSError as exc:
            self.status = f"cannot reach the control socket: {exc.strerror or exc}"
            return
        if response.get("ok"):
            self.status = f"{response['state']} request {response['id'][:8]}"
        else:
            self.status = f"not done: {escaped(str(response.get('error')))}"

    def ask(self, prompt: str) -> str | None:
        """A line typed at the bottom of the screen; None on Escape."""
        height, width = self.screen.getmaxyx()
        self.screen.nodelay(False)
        typed = ""
        try:
            while True:
                self.screen.move(height - 1, 0)
                self.screen.clrtoeol()
                self.screen.addnstr(height - 1, 0, escaped(prompt) + typed, width - 1)
                key = self.screen.getch()
                if key in (10, 13, curses.KEY_ENTER):
                    return typed
                if key == 27:
                    return None
                if key in (curses.KEY_BACKSPACE, 127, 8):
                    typed = typed[:-1]
                elif 32 <= key < 127:
                    typed += chr(key)
        finally:
            self.screen.nodelay(True)

    def draw(self) -> None:
        screen = self.screen
        screen.erase()
        height, width = screen.getmaxyx()

        def put(row: int, text: str, attribute: int = 0) -> int:
            """Write `text` wrapped, never cut: what is hidden past the edge could not be judged. The next row."""
            step = max(1, width - 1)
            for start in range(0, max(1, len(text)), step):
                if 0 <= row < height - 2:
                    screen.addnstr(row, 0, text[start:start + step], step, attribute)
                row += 1
            return row

        put(0, f"capsudo approval: {len(self.requests)} pending", curses.A_BOLD)
        put(1, _KEYS)
        row = 3
        now = time.monotonic()
        for index, (request, heard_at) in enumerate(self.requests.values()):
            shown = dict(request, left=max(0.0, request["left"] - (now - heard_at)))
            row = put(row, ("> " if index == self.selected else "  ") + summary(shown),
                      curses.A_REVERSE if index == self.selected else 0)
        request = self.current()
        if request is not None and self.show_details:
            row += 1
            heard_at = self.requests[request["id"]][1]
            for line in details(dict(request, left=max(0.0, request["left"] - (now - heard_at)))):
                row = put(row, "  " + line)
        screen.addnstr(height - 2, 0, self.status, max(1, width - 1))
        screen.refresh()
