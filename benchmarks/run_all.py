"""Run every benchmark in this directory, one process each; exit 1 if any missed.

    .venv/bin/python benchmarks/run_all.py      (or: make bench)

Each benchmark prints its own table and verdict; this prints a summary at
the end. Benchmarks run one after another, never side by side, since they
measure time on the same cores.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Quick ones first; any other script here (not starting with "_") follows.
FIRST = ["startup.py", "library_session.py", "throughput.py", "concurrency.py", "memory.py"]
# Not benchmarks of their own: compare.py runs some of the above for two trees.
NOT_BENCHMARKS = ["run_all.py", "compare.py"]


def scripts() -> list[Path]:
    others = sorted(
        path.name for path in HERE.glob("*.py") if not path.name.startswith("_") and path.name not in (*FIRST, *NOT_BENCHMARKS)
    )
    return [HERE / name for name in [*FIRST, *others] if (HERE / name).exists()]


def main() -> int:
    results = []
    for script in scripts():
        print(f"\n##### {script.name}\n", flush=True)
        start = time.monotonic()
        status = subprocess.call([sys.executable, str(script)])
        results.append((script.name, status, time.monotonic() - start))
    print("\n##### summary\n")
    for name, status, elapsed in results:
        verdict = "all targets met" if status == 0 else f"MISSED (exit status {status})"
        print(f"  {name:24} {verdict:32} {elapsed:6.1f} s")
    return 0 if all(status == 0 for _, status, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
