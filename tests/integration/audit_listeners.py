"""Reading the audit as log daemons would: datagram sockets standing in for /dev/log and journald, and a file tailed as it grows."""

from __future__ import annotations

import json
import os
import queue
import socket
import struct
import threading
import time


def datagram_listener(path: str) -> socket.socket:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(path)
    listener.settimeout(10)
    return listener


def read_until_ended(listener: socket.socket, message_of) -> list[dict]:
    records = []
    while not records or records[-1]["event"] != "ended":
        records.append(json.loads(message_of(listener.recv(65536))))
    return records


def journal_fields(datagram: bytes) -> dict[str, str]:
    fields, rest = {}, datagram
    while rest:
        line, _, after = rest.partition(b"\n")
        if b"=" in line:
            name, _, value = line.partition(b"=")
            rest = after
        else:  # binary form: NAME\n, 64-bit little-endian length, value, \n
            name, (length,) = line, struct.unpack("<Q", after[:8])
            value, rest = after[8:8 + length], after[9 + length:]
        fields[name.decode()] = value.decode()
    return fields


def syslog_message(datagram: bytes) -> str:
    text = datagram.decode()
    assert text.startswith("<86>"), text  # authpriv (10) * 8 + info (6)
    header, _, message = text.partition("]: ")
    assert header.split()[-1].startswith("capsudod["), text
    return message


def stand_ins(directory: str) -> tuple[socket.socket, socket.socket, dict[str, str]]:
    """A syslog and a journal listener in `directory`, and the environment entries that point a daemon at them."""
    syslog, journal = datagram_listener(f"{directory}/log"), datagram_listener(f"{directory}/journal")
    return syslog, journal, {"CAPSUDO_SYSLOG_SOCKET": f"{directory}/log",
                             "CAPSUDO_JOURNAL_SOCKET": f"{directory}/journal"}


def drain(listener: socket.socket) -> list[bytes]:
    """Every datagram queued on `listener` now."""
    listener.setblocking(False)
    datagrams = []
    while True:
        try:
            datagrams.append(listener.recv(65536))
        except BlockingIOError:
            return datagrams


class Tail:
    """`tail -f` of a JSON-lines file: a thread that reads each record as it is appended."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.records: queue.Queue[dict] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        while not os.path.exists(self.path) and not self._stop.is_set():
            time.sleep(0.01)
        with open(self.path, "rb") as file:
            pending = b""
            while not self._stop.is_set():
                chunk = file.read()
                if not chunk:
                    time.sleep(0.01)
                    continue
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    self.records.put(json.loads(line))

    def next_event(self, name: str, timeout: float = 10.0) -> dict:
        """The next record of event `name`, skipping others; fails after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            record = self.records.get(timeout=max(0.0, deadline - time.monotonic()))
            if record["event"] == name:
                return record

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
