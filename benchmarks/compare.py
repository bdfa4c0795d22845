"""This checkout against another git revision, side by side in one run.

For a change that should cost nothing (a restructuring, a refactoring): are
start-up, a library session and throughput no worse than at the revision
before? Two runs of a benchmark made an hour apart on this shared 2-core
machine differ by more than such a change could (docs/benchmarks.md), so
both trees are measured in the same run, round by round, and compared by
their medians over the rounds.

The other revision gets a git worktree of its own (under .bench/, kept and
reused, or with --temporary under a temporary directory removed at the end)
and a venv of its own, made as the Makefile makes one: uv from PATH or this
checkout's .uv/bin/uv, UV_PYTHON_DOWNLOADS=never, UV_PYTHON the system's
python3, `uv sync --all-packages --compile-bytecode` with
UV_PROJECT_ENVIRONMENT its own .venv. This checkout's .venv is synced the
same way, so the two differ in capsudo's code only.

Each round runs startup.py, library_session.py and throughput.py once per
tree, the two trees one after the other for each script (which goes first
alternates between rounds). A tree's run is the script under that tree's
interpreter, so that its capsudo, capsudod and library are the ones
measured and each run starts that tree's own daemon. The scripts are this
checkout's for both trees (the measuring code held the same; --own-scripts
runs each tree's own copy instead). Their printed tables are read back, so
they need no option beyond their count of runs.

The rule, for a figure where less is better (all of them are times, or a
count): this tree is no worse within noise when the ratio of its median to
the base's is at most 1.05, or when it exceeds the base's median by less
than the spread between rounds: the interquartile range of the per-round
differences (this minus base, each round's two runs of a script being
adjacent in time). The differences, not each tree's own figures, because
load that drifts over the run moves both trees of a round alike; that
drift would widen each tree's range without saying anything about the
change. The "control" rows measure no capsudo
code (the interpreter alone, `true` alone, `head` alone): their ratios show
how far the run was even between the trees. Exit status 1 when a figure
other than a control is worse.

    .venv/bin/python benchmarks/compare.py [--base REV] [--rounds N]
        [--only startup,library_session,throughput] [--temporary] [--own-scripts]
        [--record FILE.json]

Another implementation's capsudo/capsudod (capsudo-rs) cannot be compared
yet: startup.py reads the client's imports under `python -X importtime`,
and the library figures need a Python library on both sides.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from _harness import machine, table  # noqa: E402

NO_WORSE_RATIO = 1.05
# Runs within one script run, chosen so that a round of all three scripts for
# both trees takes about half a minute here.
RUNS = {"startup": "40", "library_session": "300", "throughput": "2"}
SCRIPTS = list(RUNS)


@dataclass
class Figure:
    """One number read back from a script's printed table (or text)."""

    script: str
    label: str
    row: str  # the row's first cell, or a regular expression over the whole output
    column: int  # 1 = the first figure after the row's name
    control: bool = False
    unit: str = "ms"


FIGURES = [
    Figure("startup", "capsudo -S ENDPOINT -- true", "capsudo -S ENDPOINT -- true", 1),
    Figure("startup", "python -c 'import capsudo.client'", "python -c 'import capsudo.client'", 1),
    Figure("startup", "minimal Python client, same session", "minimal Python client, same session", 1),
    Figure("startup", "modules on the client's path", r"the client's path imports (\d+) modules", 0, unit="modules"),
    Figure("startup", "python -c pass", "python -c pass (same interpreter)", 1, control=True),
    Figure("startup", "true (bare)", f"{shutil.which('true') or '/bin/true'} (bare)", 1, control=True),
    Figure("library_session", 'run(["true"]) library session', 'run(["true"], endpoint=ENDPOINT)', 1),
    Figure("library_session", 'subprocess.run(["true"])', 'subprocess.run(["true"]) (no capsudo)', 1, control=True),
    Figure("throughput", "capsudo -- head > pipe, transfer", "capsudo -- head > pipe", 3, unit="s"),
    Figure("throughput", "run(head) > pipe, transfer", "run(head) (library API) > pipe", 3, unit="s"),
    Figure("throughput", "capsudo -- head > /dev/null, end to end", "capsudo -- head > /dev/null", 1, unit="s"),
    Figure("throughput", "run(head) > /dev/null, end to end", "run(head) (library API) > /dev/null", 1, unit="s"),
    Figure("throughput", "head > pipe, transfer", "head (no capsudo) > pipe", 3, control=True, unit="s"),
]


class Failure(Exception):
    """A step that cannot go on: printed as one line, exit status 2."""


def git(*args: str, cwd: Path = ROOT) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise Failure(f"git {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout.strip()


def find_uv() -> str:
    uv = shutil.which("uv") or str(ROOT / ".uv" / "bin" / "uv")
    if not os.access(uv, os.X_OK):
        raise Failure("no uv on PATH nor in .uv/bin/uv: run `make venv` first")
    return uv


def sync_venv(tree: Path) -> Path:
    """The tree's own .venv, as the Makefile makes it, plus bytecode."""
    python3 = shutil.which("python3")
    if python3 is None:
        raise Failure("no python3 on PATH")
    environment = {key: value for key, value in os.environ.items() if key not in ("VIRTUAL_ENV", "PYTHONPATH")}
    environment.update(UV_PYTHON_DOWNLOADS="never", UV_PYTHON=python3, UV_PROJECT_ENVIRONMENT=str(tree / ".venv"))
    result = subprocess.run(
        [find_uv(), "sync", "--all-packages", "--compile-bytecode", "--quiet"],
        cwd=tree, env=environment, capture_output=True, text=True,
    )
    if result.returncode != 0:
        raise Failure(f"uv sync in {tree} failed: {result.stderr.strip().splitlines()[-1:]}")
    return tree / ".venv" / "bin" / "python"


def base_worktree(commit: str, temporary: bool) -> tuple[Path, Path | None]:
    """A worktree checked out at commit, and the directory to remove after (if any)."""
    if temporary:
        scratch = Path(tempfile.mkdtemp(prefix="capsudo-compare-"))
        tree = scratch / commit[:12]
        git("worktree", "add", "--detach", "--quiet", str(tree), commit)
        return tree, scratch
    tree = ROOT / ".bench" / commit[:12]
    git("worktree", "prune")
    if (tree / ".git").exists():
        if git("rev-parse", "HEAD", cwd=tree) != commit:
            git("checkout", "--detach", "--quiet", commit, cwd=tree)
    else:
        tree.parent.mkdir(exist_ok=True)
        git("worktree", "add", "--detach", "--quiet", str(tree), commit)
    return tree, None


@dataclass
class Tree:
    name: str
    root: Path
    python: Path

    def script(self, name: str, own_scripts: bool) -> Path:
        return (self.root / "benchmarks" if own_scripts else HERE) / f"{name}.py"


def run_script(tree: Tree, name: str, own_scripts: bool) -> str:
    """The script's output; exit status 1 (a target missed) is a result too."""
    environment = {key: value for key, value in os.environ.items() if key not in ("VIRTUAL_ENV", "PYTHONPATH")}
    result = subprocess.run(
        [str(tree.python), str(tree.script(name, own_scripts)), RUNS[name]],
        cwd=tree.root, env=environment, stdin=subprocess.DEVNULL, capture_output=True, text=True,
    )
    if result.returncode not in (0, 1):
        tail = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise Failure(f"{name}.py for {tree.name} exited with status {result.returncode}: {tail}")
    return result.stdout


def number(cell: str) -> float:
    match = re.match(r"\s*([0-9.]+)", cell)
    if match is None:
        raise ValueError(cell)
    return float(match.group(1))


def read_figure(figure: Figure, output: str) -> float:
    """The figure from a script's output: a table row's cell, or a pattern's group."""
    if figure.column == 0:
        match = re.search(figure.row, output)
        if match is None:
            raise Failure(f"{figure.script}.py printed no line matching {figure.row!r}")
        return float(match.group(1))
    for line in output.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if cells[0] == figure.row and len(cells) > figure.column:
            value = number(cells[figure.column])
            # Tables print milliseconds as "1.23 ms" and seconds as "0.123 s".
            return value / 1000 if cells[figure.column].endswith(" ms") else value
    raise Failure(f"{figure.script}.py printed no row {figure.row!r}")


def spread(base: list[float], this: list[float]) -> float:
    """Interquartile range of the per-round differences this - base."""
    differences = [b - a for a, b in zip(base, this)]
    quartiles = statistics.quantiles(differences, n=4, method="inclusive")
    return quartiles[2] - quartiles[0]


def shown(figure: Figure, value: float) -> str:
    if figure.unit == "ms":
        return f"{value * 1000:.2f} ms"
    if figure.unit == "s":
        return f"{value:.3f} s"
    return f"{value:g}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="HEAD~1", help="the git revision to compare against (default HEAD~1)")
    parser.add_argument("--rounds", type=int, default=8, help="rounds of every script for both trees (default 8)")
    parser.add_argument("--only", default=",".join(SCRIPTS), help=f"comma-separated, of {','.join(SCRIPTS)}")
    parser.add_argument("--temporary", action="store_true", help="the base's worktree in a temporary directory, removed after")
    parser.add_argument("--own-scripts", action="store_true", help="run each tree's own copy of the scripts")
    parser.add_argument("--record", metavar="FILE", help="also write every round's figures to FILE as JSON")
    options = parser.parse_args()
    only = [name.strip() for name in options.only.split(",") if name.strip()]
    unknown = [name for name in only if name not in SCRIPTS]
    if unknown or not only:
        parser.error(f"--only takes some of {','.join(SCRIPTS)}, not {','.join(unknown) or 'nothing'}")
    if options.rounds < 2:
        parser.error("--rounds must be at least 2: the spread between rounds is part of the rule")

    try:
        commit = git("rev-parse", "--verify", "--quiet", f"{options.base}^{{commit}}")
    except Failure:
        raise Failure(f"--base {options.base}: not a revision of this repository") from None
    head = git("rev-parse", "HEAD")
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    started = time.monotonic()
    scratch = None
    try:
        base_root, scratch = base_worktree(commit, options.temporary)
        print(f"syncing venvs (uv sync --all-packages --compile-bytecode) in {base_root} and {ROOT}", flush=True)
        trees = [Tree("base", base_root, sync_venv(base_root)), Tree("this", ROOT, sync_venv(ROOT))]
        figures = [figure for figure in FIGURES if figure.script in only]
        values = {(figure.label, tree.name): [] for figure in figures for tree in trees}
        for round_number in range(options.rounds):
            order = trees if round_number % 2 == 0 else trees[::-1]
            for name in only:
                for tree in order:
                    output = run_script(tree, name, options.own_scripts)
                    for figure in figures:
                        if figure.script == name:
                            values[(figure.label, tree.name)].append(read_figure(figure, output))
            print(f"round {round_number + 1}/{options.rounds} done ({time.monotonic() - started:.0f} s)", flush=True)
    finally:
        if scratch is not None:
            subprocess.run(["git", "worktree", "remove", "--force", str(scratch / commit[:12])], cwd=ROOT,
                           capture_output=True)
            shutil.rmtree(scratch, ignore_errors=True)

    print()
    print(f"== this checkout against {options.base}, side by side")
    print(f"   {machine()}")
    print(f"   {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, {options.rounds} rounds in {time.monotonic() - started:.0f} s")
    print(f"   base: {git('log', '-1', '--format=%h %s', commit)}")
    print(f"   this: {git('log', '-1', '--format=%h %s', head)}" + (" (with uncommitted changes)" if dirty else ""))
    print(f"   runs per round: " + ", ".join(f"{name}.py {RUNS[name]}" for name in only))
    print()
    rows = []
    worse = []
    for figure in figures:
        base, this = values[(figure.label, "base")], values[(figure.label, "this")]
        base_median, this_median = statistics.median(base), statistics.median(this)
        ratio = this_median / base_median if base_median else float("inf") if this_median else 1.0
        noise = spread(base, this)
        no_worse = ratio <= NO_WORSE_RATIO or this_median - base_median < noise
        if not no_worse and not figure.control:
            worse.append(figure.label)
        rows.append([
            figure.label + (" (control)" if figure.control else ""),
            shown(figure, base_median), shown(figure, this_median), f"{ratio:.3f}", shown(figure, noise),
            "no worse" if no_worse else "WORSE",
        ])
    if options.record:
        rounds = {f"{label} [{tree}]": [round(value, 7) for value in found] for (label, tree), found in values.items()}
        with open(options.record, "w") as record:
            json.dump({"base": commit, "this": head, "dirty": dirty, "machine": machine(),
                       "runs": {name: RUNS[name] for name in only}, "rounds": rounds}, record, indent=1)
    print(table([f"figure (median of {options.rounds} rounds)", "base", "this", "ratio", "spread", "verdict"], rows))
    print()
    print(f"no worse within noise: ratio <= {NO_WORSE_RATIO}, or this exceeds base by less than the spread"
          " (the interquartile range of the per-round differences this - base)")
    print("this checkout: " + (f"{len(worse)} figure(s) worse: {', '.join(worse)}" if worse else "no figure worse"))
    return 1 if worse else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Failure as failure:
        print(f"compare.py: {failure}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
