"""`capsudo -- true` end to end, against starting the same interpreter bare.

Spawns the real console script (.venv/bin/capsudo) as a process and waits for
it, ROUNDS times, interleaved with `python -c pass` on the same interpreter,
with bare `true`, with importing the client, and with _minimal_client.py (the
same session in a dozen lines of standard library: the floor for any client
written in Python). Targets: median at most 20 ms, and at most 2.5 times the
median of `python -c pass`.

Also runs the client once under `python -X importtime` and checks that the
whole command line path (parsing, connecting, the session) imports neither
trio nor construct.

    .venv/bin/python benchmarks/startup.py [ROUNDS]
"""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

from _harness import CAPSUDO, PYTHON, TRUE, Daemon, Verdict, median, ms, percentile, spawn_and_wait, table

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 200
WARMUP = 10
ABSOLUTE_TARGET = 0.020
RELATIVE_TARGET = 2.5
MINIMAL_CLIENT = Path(__file__).resolve().parent / "_minimal_client.py"
HEAVY = ("trio", "construct")
# Standard library modules that each cost the client milliseconds here and
# that its non-interactive path does without; listed when they creep back.
COSTLY = ("typing", "dataclasses", "inspect", "socket", "contextlib", "collections", "enum", "re", "importlib")


def imported_modules(argv: list[str]) -> list[tuple[str, int, int]]:
    """(module, self µs, cumulative µs) for each import the command made."""
    result = subprocess.run([PYTHON, "-X", "importtime", *argv], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise RuntimeError(f"{argv} failed: {result.stderr}")
    modules = []
    for line in result.stderr.splitlines():
        if not line.startswith("import time:") or "imported package" in line:
            continue
        self_us, cumulative_us, name = (part.strip() for part in line.removeprefix("import time:").split("|"))
        modules.append((name, int(self_us), int(cumulative_us)))
    return modules


def main() -> int:
    verdict = Verdict("capsudo -- true, end to end")
    with Daemon() as daemon:
        subjects = {
            "capsudo -S ENDPOINT -- true": [CAPSUDO, "-S", daemon.socket, "--", "true"],
            "python -c pass (same interpreter)": [PYTHON, "-c", "pass"],
            "minimal Python client, same session": [PYTHON, str(MINIMAL_CLIENT), daemon.socket],
            "python -c 'import capsudo.client'": [PYTHON, "-c", "import capsudo.client"],
            f"{TRUE} (bare)": [TRUE],
        }
        times: dict[str, list[float]] = {name: [] for name in subjects}
        order = list(subjects)
        shuffle = random.Random(1)
        for round_number in range(WARMUP + ROUNDS):
            shuffle.shuffle(order)
            for name in order:
                elapsed = spawn_and_wait(subjects[name], stdin=subprocess.DEVNULL)
                if round_number >= WARMUP:
                    times[name].append(elapsed)

        modules = imported_modules([CAPSUDO, "-S", daemon.socket, "--", "true"])

    rows = [[name, ms(median(values)), ms(percentile(values, 0.9))] for name, values in times.items()]
    print(table([f"command ({ROUNDS} runs each, interleaved)", "median", "p90"], rows))

    names = [name for name, _, _ in modules]
    heavy = [module for module in HEAVY if any(name == module or name.startswith(module + ".") for name in names)]
    capsudo_modules = [m for m in modules if m[0].startswith("capsudo")]
    slowest = sorted(modules, key=lambda m: m[1], reverse=True)[:8]
    print()
    print(f"the client's path imports {len(names)} modules; trio or construct among them: {', '.join(heavy) or 'none'}")
    costly = [name for name in COSTLY if name in names]
    print(f"capsudo modules: {', '.join(m[0] for m in capsudo_modules)}")
    print(f"costly standard library modules on that path: {', '.join(costly) or 'none'}")
    print("largest self import times (µs, under -X importtime): " + ", ".join(f"{n} {s}" for n, s, _ in slowest))

    subject = median(times["capsudo -S ENDPOINT -- true"])
    interpreter = median(times["python -c pass (same interpreter)"])
    verdict.check(f"median <= {ms(ABSOLUTE_TARGET)}", ms(subject), subject <= ABSOLUTE_TARGET)
    ratio = subject / interpreter
    verdict.check(
        f"median <= {RELATIVE_TARGET}x python -c pass", f"{ratio:.2f}x ({ms(interpreter)})", ratio <= RELATIVE_TARGET
    )
    verdict.check("client imports neither trio nor construct", ", ".join(heavy) or "neither", not heavy)
    return verdict.finish()


if __name__ == "__main__":
    sys.exit(main())
