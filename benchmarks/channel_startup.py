"""`capsudo -- true` over a Unix socket, tcp:// and tls://, side by side, and a refused tcp:// session.

One daemon per endpoint, ROUNDS runs of each command interleaved with
`python -c pass` on the same interpreter. Targets: tcp:// at most 1.5x the
Unix socket, tls:// (its handshake counted) at most 2x, and a refused
tcp:// session (no such program) under 50 ms beyond `capsudo -S tcp://… -- true`.

    .venv/bin/python benchmarks/channel_startup.py [ROUNDS]
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import tempfile
import time

from _harness import CAPSUDO, CAPSUDOD, PYTHON, Daemon, Verdict, ensure_bytecode, median, ms, stop_process, table

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 100
WARMUP = 5


def network_daemon(endpoint: str, *args: str, log: str) -> tuple[subprocess.Popen, str]:
    with open(log, "wb") as out:
        process = subprocess.Popen([CAPSUDOD, "-S", endpoint, *args], stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = re.search(r"listening on (\S+)", open(log).read())
        if found:
            return process, found.group(1)
        time.sleep(0.02)
    process.kill()
    raise RuntimeError(open(log).read())


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    import trustme

    ensure_bytecode()
    directory = tempfile.mkdtemp(prefix="capsudo-bench-tls-")
    ca = trustme.CA()
    ca_path, daemon_pem, client_pem = (os.path.join(directory, n) for n in ("ca.pem", "daemon.pem", "client.pem"))
    ca.cert_pem.write_to_path(ca_path)
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(daemon_pem)
    ca.issue_cert("client.capsudo.test").private_key_and_cert_chain_pem.write_to_path(client_pem)
    verdict = Verdict("capsudo -- true across endpoints")
    with Daemon() as unix:
        tcp, tcp_endpoint = network_daemon("tcp://127.0.0.1:0", log=os.path.join(directory, "tcp.log"))
        tls, tls_endpoint = network_daemon(
            "tls://127.0.0.1:0", "--tls-cert", daemon_pem, "--tls-key", daemon_pem, "--tls-client-ca", ca_path,
            log=os.path.join(directory, "tls.log"),
        )
        try:
            tls_flags = ["--tls-cert", client_pem, "--tls-key", client_pem, "--tls-ca", ca_path]
            subjects = {
                "python -c pass": [PYTHON, "-c", "pass"],
                "capsudo -S /unix/socket -- true": [CAPSUDO, "-S", unix.socket, "--", "true"],
                "capsudo -S tcp://127.0.0.1:P -- true": [CAPSUDO, "-S", tcp_endpoint, "--", "true"],
                "capsudo -S tls://127.0.0.1:P -- true": [CAPSUDO, "-S", tls_endpoint, *tls_flags, "--", "true"],
                "capsudo -S tcp://… -- no-such-program (refused)": [CAPSUDO, "-S", tcp_endpoint, "--", "no-such-program"],
            }
            times: dict[str, list[float]] = {name: [] for name in subjects}
            order = list(subjects)
            shuffle = random.Random(1)
            for round_number in range(WARMUP + ROUNDS):
                shuffle.shuffle(order)
                for name in order:
                    elapsed = timed(subjects[name])
                    if round_number >= WARMUP:
                        times[name].append(elapsed)
        finally:
            stop_process(tcp)
            stop_process(tls)
    medians = {name: median(values) for name, values in times.items()}
    unix_median = medians["capsudo -S /unix/socket -- true"]
    rows = [[name, ms(value), f"{value / unix_median:.2f}x"] for name, value in medians.items()]
    print(table([f"command ({ROUNDS} runs each, interleaved)", "median", "vs unix"], rows))
    tcp_median = medians["capsudo -S tcp://127.0.0.1:P -- true"]
    verdict.check("tcp:// <= 1.5x unix", f"{tcp_median / unix_median:.2f}x", tcp_median <= 1.5 * unix_median)
    tls_median = medians["capsudo -S tls://127.0.0.1:P -- true"]
    verdict.check("tls:// <= 2x unix", f"{tls_median / unix_median:.2f}x", tls_median <= 2 * unix_median)
    refused = medians["capsudo -S tcp://… -- no-such-program (refused)"] - tcp_median
    verdict.check("refused tcp:// < 50 ms beyond tcp:// true", ms(refused), refused < 0.050)
    return verdict.finish()


if __name__ == "__main__":
    sys.exit(main())
