"""Every module of the workspace has its bytecode after `make test` (and `make demo`, and an install).

A machine that does not write bytecode (a read-only tree, or
PYTHONDONTWRITEBYTECODE=1) would otherwise compile every module again at
every start of every command: milliseconds of each `capsudo` call.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_module_of_the_workspace_has_its_bytecode():
    sources = sorted(ROOT.glob("packages/*/src/capsudo/**/*.py"))
    assert sources
    missing = [str(source.relative_to(ROOT)) for source in sources
               if not Path(importlib.util.cache_from_source(str(source))).exists()]
    assert not missing, f"no bytecode for {missing} (make test compiles them: make bytecode)"
