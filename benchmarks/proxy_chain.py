"""Sessions through a Unix -> tcp -> Unix proxy chain, beside the same sessions on the daemon's socket.

One capsudod; `capsudo-proxy -S tcp://127.0.0.1:0 DAEMON` in front of it,
and `capsudo-proxy -S NEAR.sock tcp://127.0.0.1:PORT` in front of that. The
client process (`.venv/bin/capsudo`) runs against NEAR.sock and against the
daemon's socket directly, interleaved:

- latency: `capsudo -- true`, median and p90 of ROUNDS runs each;
- throughput: `capsudo -- head -c 1073741824 /dev/zero` into a pipe this
  script drains, REPETITIONS runs each: end to end, and the transfer from
  first byte to end-of-file.

Directly, the program writes into the client's own pipe. Through the chain
every byte is read by the far proxy from its socket pair, framed over TCP,
and written by the near proxy into the client's pipe: two Python processes
on the data path, which is what this measures.

Targets (a floor for regressions, not a claim of parity): through the chain
`true` in a median <= 150 ms, and 1 GiB at >= 50 MiB/s end to end.

    .venv/bin/python benchmarks/proxy_chain.py [ROUNDS [REPETITIONS]]
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from _harness import BIN, CAPSUDO, Daemon, Verdict, median, ms, percentile, spawn_and_wait, stop_process, table

SIZE = 1 << 30
CHUNK = 1 << 20
HEAD = ["head", "-c", str(SIZE), "/dev/zero"]
PROXY = str(BIN / "capsudo-proxy")
LATENCY_TARGET = 0.150
THROUGHPUT_TARGET = 50 * (1 << 20)


class Proxy:
    """`capsudo-proxy -S listen target`, its log in a file; `.listen` is where it really listens."""

    def __init__(self, listen: str, target: str, log_path: str) -> None:
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen([PROXY, "-S", listen, target], stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=log)
        deadline = time.monotonic() + 20
        while True:
            found = re.search(r"forwarding (\S+) to ", open(log_path).read())
            if found and (not found.group(1).startswith("/") or os.path.exists(found.group(1))):
                self.listen = found.group(1)
                return
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"capsudo-proxy did not start: {open(log_path).read()}")
            time.sleep(0.02)

    def stop(self) -> None:
        stop_process(self.process)


def drain(fd: int) -> tuple[int, float | None, float]:
    """Read fd to its end into one reused buffer: (bytes, first byte at, end at)."""
    view = memoryview(bytearray(CHUNK))
    total, first = 0, None
    while True:
        count = os.readv(fd, [view])
        if count == 0:
            return total, first, time.perf_counter()
        if first is None:
            first = time.perf_counter()
        total += count


def transfer(endpoint: str) -> tuple[float, float]:
    """(end to end, first byte to end-of-file) of 1 GiB through a session on `endpoint`."""
    read_end, write_end = os.pipe()
    start = time.perf_counter()
    process = subprocess.Popen([CAPSUDO, "-S", endpoint, "--", *HEAD], stdin=subprocess.DEVNULL, stdout=write_end)
    os.close(write_end)
    try:
        total, first, end = drain(read_end)
    finally:
        os.close(read_end)
    status = process.wait()
    finished = time.perf_counter()
    if status != 0 or total != SIZE:
        raise RuntimeError(f"session on {endpoint}: status {status}, {total} bytes instead of {SIZE}")
    return finished - start, end - (first or end)


def rate(seconds: float) -> str:
    return f"{SIZE / seconds / (1 << 20):.0f} MiB/s"


def main() -> int:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 60
    repetitions = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    verdict = Verdict("proxy chain: unix -> tcp -> unix, beside the daemon's own socket")
    directory = tempfile.mkdtemp(prefix="capsudo-bench-chain-")
    proxies: list[Proxy] = []
    try:
        with Daemon() as daemon:
            proxies.append(Proxy("tcp://127.0.0.1:0", daemon.socket, f"{directory}/far.log"))
            proxies.append(Proxy(f"{directory}/near.sock", proxies[0].listen, f"{directory}/near.log"))
            endpoints = {"direct": daemon.socket, "chain": proxies[1].listen}
            print(f"   chain: {endpoints['chain']} -> {proxies[0].listen} -> {daemon.socket}\n")
            for endpoint in endpoints.values():  # warm-up: page cache, first connections
                spawn_and_wait([CAPSUDO, "-S", endpoint, "--", "true"])

            latency: dict[str, list[float]] = {name: [] for name in endpoints}
            for _ in range(rounds):
                for name, endpoint in endpoints.items():
                    latency[name].append(spawn_and_wait([CAPSUDO, "-S", endpoint, "--", "true"]))
            print(table(["capsudo -- true", "median", "p90"],
                        [[name, ms(median(v)), ms(percentile(v, 0.9))] for name, v in latency.items()]))
            print()

            timings: dict[str, list[tuple[float, float]]] = {name: [] for name in endpoints}
            for _ in range(repetitions):
                for name, endpoint in endpoints.items():
                    timings[name].append(transfer(endpoint))
            rows = []
            for name, values in timings.items():
                end_to_end = median([v[0] for v in values])
                moving = median([v[1] for v in values])
                rows.append([name, f"{end_to_end:.2f} s", rate(end_to_end), f"{moving:.2f} s", rate(moving)])
            print(table(["1 GiB into a pipe", "end to end", "rate", "transfer", "rate"], rows))
    finally:
        for proxy in reversed(proxies):
            proxy.stop()
        shutil.rmtree(directory, ignore_errors=True)

    chain_latency = median(latency["chain"])
    verdict.check(f"chain: median `true` <= {ms(LATENCY_TARGET)}",
                  f"{ms(chain_latency)} (direct {ms(median(latency['direct']))})", chain_latency <= LATENCY_TARGET)
    chain_time = median([v[0] for v in timings["chain"]])
    verdict.check(f"chain: 1 GiB end to end >= {THROUGHPUT_TARGET >> 20} MiB/s",
                  f"{rate(chain_time)} (direct {rate(median([v[0] for v in timings['direct']]))})",
                  SIZE / chain_time >= THROUGHPUT_TARGET)
    return verdict.finish()


if __name__ == "__main__":
    sys.exit(main())
