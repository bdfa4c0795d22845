"""Load: idle connections held open, and a flood past the session limit.

Idle connections. Two daemons with the same flags (`--max-sessions 2000
--handshake-timeout 3600`, and the handshake and per-peer limits raised, so
that a silent client is neither refused nor timed out during the run); one of them holds IDLE connections that connected
and say nothing. The script checks that the daemon really accepted them (its
descriptor count grew by IDLE), then times `capsudo -S ENDPOINT -- true` (the
real client process) ROUNDS times on each daemon, the runs interleaved, and
checks afterwards that the idle connections are still held. This script
raises its own RLIMIT_NOFILE soft limit (the daemons inherit it): 1,000
connections are more than the usual 1,024 leave room for.

Flood. A daemon with `--max-sessions 32`: 32 silent connections take every
slot, then FLOOD more connect at once. Each must be answered promptly with an
Error naming the limit ("too many sessions") and Exit 1; a
real `capsudo -- true` in the middle of the flood must fail with that one
line. When the 32 go away, `capsudo -- true` works again and the daemon's
descriptor count is back where it started.

Message flood. One session on a daemon, after its End, sends window sizes
as fast as the daemon takes them; `capsudo -- true` is timed on that daemon
and on a quiet one with the same flags, interleaved, and the flooded
daemon's CPU time is read over the runs. Nothing limits that flood: the
figure says what it costs.

Targets: with IDLE idle connections, median `capsudo -- true` < 50 ms; every
flooded connection refused with "too many sessions" within 2 s of
connecting; the client's refusal is one line; the daemon serves again after;
during the message flood every session is still served.

    .venv/bin/python benchmarks/load.py [IDLE [ROUNDS]]
"""

from __future__ import annotations

import array
import os
import random
import resource
import selectors
import socket
import subprocess
import sys
import threading
import time

from _harness import CAPSUDO, Daemon, Verdict, median, ms, percentile, table
from memory import descriptors

from capsudo.proto import lean

IDLE = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 40
TARGET = 0.050
FLOOD_LIMIT = 32
FLOOD = 500
REFUSAL_TARGET = 2.0


def raise_descriptor_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise SystemExit(f"RLIMIT_NOFILE hard limit {hard} is below the {needed} this run needs")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def connect(path: str) -> socket.socket:
    # A blocking connect: with a timeout set, a Unix socket whose backlog is
    # full fails at once with EAGAIN instead of waiting for the daemon to accept.
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    sock.settimeout(10)
    return sock


def wait_for_descriptors(pid: int, at_least: int, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while (count := descriptors(pid)) < at_least and time.monotonic() < deadline:
        time.sleep(0.05)
    return count


def wait_for_descriptors_at_most(pid: int, at_most: int, timeout: float = 10) -> int:
    deadline = time.monotonic() + timeout
    while (count := descriptors(pid)) > at_most and time.monotonic() < deadline:
        time.sleep(0.05)
    return count


def one_session(endpoint: str) -> float:
    start = time.perf_counter()
    result = subprocess.run([CAPSUDO, "-S", endpoint, "--", "true"], stdin=subprocess.DEVNULL, capture_output=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"capsudo -- true failed ({result.returncode}): {result.stderr.decode().strip()}")
    return elapsed


def parse_replies(data: bytes) -> list[tuple[int, bytes]]:
    replies = []
    while len(data) >= lean.HEADER_SIZE:
        kind, length = lean.HEADER.unpack(data[: lean.HEADER_SIZE])
        replies.append((kind, data[lean.HEADER_SIZE : lean.HEADER_SIZE + length]))
        data = data[lean.HEADER_SIZE + length :]
    return replies


def idle_connections(verdict: Verdict) -> None:
    # One peer (this process) holds them all: the limits per peer are raised with the totals.
    flags = ("--max-sessions", str(IDLE + 1000), *_ALL_FROM_ONE_PEER, "--handshake-timeout", "3600")
    with Daemon(*flags) as loaded, Daemon(*flags) as quiet:
        before = descriptors(loaded.pid)
        idle = [connect(loaded.socket) for _ in range(IDLE)]
        held = wait_for_descriptors(loaded.pid, before + IDLE)
        for endpoint in (loaded.socket, quiet.socket):
            one_session(endpoint)  # warm-up, unmeasured
        times: dict[str, list[float]] = {"loaded": [], "quiet": []}
        order = ["loaded", "quiet"]
        shuffle = random.Random(8)
        for _ in range(ROUNDS):
            shuffle.shuffle(order)
            for name in order:
                times[name].append(one_session(loaded.socket if name == "loaded" else quiet.socket))
        still_held = descriptors(loaded.pid)
        # A silent connection is still served once it speaks: ask one of them for End
        # without descriptors and expect the daemon's refusal, not a closed socket.
        probe = idle[0]
        probe.sendall(lean.end())
        probe.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := probe.recv(4096):
            answer += chunk
        for sock in idle:
            sock.close()

    rows = [
        [f"capsudo -- true, {IDLE} idle connections open", ms(median(times["loaded"])),
         ms(percentile(times["loaded"], 0.9)), ms(min(times["loaded"]))],
        ["capsudo -- true, no idle connection (baseline)", ms(median(times["quiet"])),
         ms(percentile(times["quiet"], 0.9)), ms(min(times["quiet"]))],
    ]
    print(table([f"{ROUNDS} runs each, interleaved", "median", "p90", "min"], rows))
    print(f"\nloaded daemon's descriptors: {before} before, {held} with the idle connections, {still_held} after the runs")
    print()
    verdict.check(f"daemon accepted {IDLE} idle connections", f"{held - before} more descriptors", held - before >= IDLE)
    verdict.check("idle connections still held after the runs", f"{still_held - before} more descriptors",
                  still_held - before >= IDLE)
    kinds = [kind for kind, _ in parse_replies(answer)]
    verdict.check("an idle connection is still served when it speaks", f"replies {kinds}", kinds == [lean.ERROR, lean.EXIT])
    value = median(times["loaded"])
    verdict.check(f"median capsudo -- true with {IDLE} idle < 50 ms", ms(value), value < TARGET)


# Room for every connection this script makes in handshake and session slots
# alike, so that only --max-sessions limits it (benchmarks/fairness.py is the
# one about the limits per peer).
_ALL_FROM_ONE_PEER = ("--max-sessions-per-peer", "100000", "--max-handshakes", "100000",
                      "--max-handshakes-per-peer", "100000")


def flood(verdict: Verdict) -> None:
    with Daemon("--max-sessions", str(FLOOD_LIMIT), *_ALL_FROM_ONE_PEER, "--handshake-timeout", "3600") as daemon:
        base = descriptors(daemon.pid)
        holders = [connect(daemon.socket) for _ in range(FLOOD_LIMIT)]
        wait_for_descriptors(daemon.pid, base + FLOOD_LIMIT)

        selector = selectors.DefaultSelector()
        connected_at: dict[socket.socket, float] = {}
        received: dict[socket.socket, bytes] = {}
        refused_in: list[float] = []
        flood_start = time.perf_counter()
        client = None
        for number in range(FLOOD):
            sock = connect(daemon.socket)
            connected_at[sock] = time.perf_counter()
            received[sock] = b""
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
            if number == FLOOD // 2:
                client = subprocess.Popen([CAPSUDO, "-S", daemon.socket, "--", "true"], stdin=subprocess.DEVNULL,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while selector.get_map() and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=1):
                sock = key.fileobj
                try:
                    chunk = sock.recv(65536)
                except ConnectionResetError:
                    chunk = b""
                received[sock] += chunk
                # Answered once Exit has come (as a client would, it then
                # closes), or when the daemon closed first.
                kinds = [kind for kind, _ in parse_replies(received[sock])]
                if chunk and lean.EXIT not in kinds:
                    continue
                refused_in.append(time.perf_counter() - connected_at[sock])
                selector.unregister(sock)
                sock.close()
        flood_seconds = time.perf_counter() - flood_start
        unanswered = len(selector.get_map())
        client_out, client_err = client.communicate(timeout=30)

        well_refused = 0
        for data in received.values():
            replies = parse_replies(data)
            if ([kind for kind, _ in replies] == [lean.ERROR, lean.EXIT]
                    and "too many sessions" in lean.text(replies[0][1])
                    and lean.exit_status(replies[1][1]) == 1):
                well_refused += 1
        for sock in selector.get_map().values():
            sock.fileobj.close()
        for sock in holders:
            sock.close()
        drained = wait_for_descriptors_at_most(daemon.pid, base)
        after = subprocess.run([CAPSUDO, "-S", daemon.socket, "--", "true"], stdin=subprocess.DEVNULL,
                               capture_output=True, timeout=30)

    slowest = max(refused_in) if refused_in else float("inf")
    rows = [
        ["connections flooded", str(FLOOD)],
        ["refused with Error 'too many sessions' + Exit 1", str(well_refused)],
        ["left unanswered after 30 s", str(unanswered)],
        ["connect to Exit received: median", ms(median(refused_in)) if refused_in else "-"],
        ["connect to Exit received: slowest", ms(slowest)],
        ["whole flood, first connect to last Exit", f"{flood_seconds:.2f} s"],
        ["capsudo -- true during the flood", f"status {client.returncode}: {client_err.decode().strip()!r}"],
        ["capsudo -- true after the holders left", f"status {after.returncode}"],
        ["daemon descriptors: before / after", f"{base} / {drained}"],
    ]
    print(table([f"flood past --max-sessions {FLOOD_LIMIT}", "measured"], rows))
    verdict.check("every flooded connection refused with 'too many sessions'", f"{well_refused} of {FLOOD}",
                  well_refused == FLOOD)
    verdict.check(f"slowest refusal < {REFUSAL_TARGET:g} s", ms(slowest), slowest < REFUSAL_TARGET)
    client_line = client_err.decode()
    verdict.check("client refused in one line naming the limit", f"status {client.returncode}",
                  client.returncode == 1 and client_line.count("\n") == 1
                  and client_line.startswith("capsudo: error: too many sessions"))
    verdict.check("served again once the slots are free", f"status {after.returncode}", after.returncode == 0)
    verdict.check("descriptor count back to the start", f"{base} -> {drained}", drained == base)


def message_flood(verdict: Verdict) -> None:
    with Daemon() as flooded, Daemon() as quiet:
        flooder = connect(flooded.socket)
        read_end, write_end = os.pipe()
        flooder.sendall(lean.arg("sleep") + lean.arg("3600"))
        flooder.sendmsg([lean.fd(3)], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                         array.array("i", [read_end, write_end, write_end]))])
        flooder.sendall(lean.end())
        burst = lean.winsize(24, 80) * 5000
        stop = threading.Event()
        sent = [0]

        def flood() -> None:
            try:
                while not stop.is_set():
                    flooder.sendall(burst)
                    sent[0] += 5000
            except OSError:
                pass

        thread = threading.Thread(target=flood)
        thread.start()
        times: dict[str, list[float]] = {"flooded": [], "quiet": []}
        order = ["flooded", "quiet"]
        shuffle = random.Random(9)
        failures = 0
        time.sleep(0.3)
        cpu_start, started = cpu_seconds(flooded.pid), time.monotonic()
        for _ in range(ROUNDS // 2):
            shuffle.shuffle(order)
            for name in order:
                try:
                    times[name].append(one_session(flooded.socket if name == "flooded" else quiet.socket))
                except RuntimeError:
                    failures += 1
        cpu_share = (cpu_seconds(flooded.pid) - cpu_start) / (time.monotonic() - started)
        stop.set()
        flooder.shutdown(socket.SHUT_RDWR)
        thread.join(10)
        flooder.close()
        os.close(read_end)
        os.close(write_end)

    rows = [
        ["capsudo -- true, another session flooding window sizes", ms(median(times["flooded"])),
         ms(percentile(times["flooded"], 0.9))],
        ["capsudo -- true, quiet daemon (baseline)", ms(median(times["quiet"])), ms(percentile(times["quiet"], 0.9))],
    ]
    print(table([f"{ROUNDS // 2} runs each, interleaved", "median", "p90"], rows))
    print(f"\nwindow sizes sent: {sent[0]}; the flooded daemon's CPU over the runs: {cpu_share:.0%} of a core")
    verdict.check("message flood: every other session served", f"{failures} failed", failures == 0)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    raise_descriptor_limit(IDLE + FLOOD + 1000)
    verdict = Verdict(f"load: {IDLE} idle connections; a flood of {FLOOD} past --max-sessions {FLOOD_LIMIT}")
    idle_connections(verdict)
    print()
    flood(verdict)
    print()
    message_flood(verdict)
    return verdict.finish()


if __name__ == "__main__":
    sys.exit(main())
