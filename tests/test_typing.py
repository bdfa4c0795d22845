"""The library's public faces are typed: py.typed in every package, and mypy --strict clean on
capsudo.core's library modules and on a program that uses them (tests/typing/library_use.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECKED = ["library_use", "capsudo.core._library", "capsudo.core._describe_client", "capsudo.core._description",
           "capsudo.core._tls"]


def test_every_package_ships_py_typed():
    packages = sorted((ROOT / "packages").glob("*/src/capsudo/*/__init__.py"))
    assert packages
    assert [p.parent.name for p in packages if not (p.parent / "py.typed").exists()] == []


def _mypy(directory: Path, *modules: str) -> subprocess.CompletedProcess:
    arguments = [arg for module in modules for arg in ("-m", module)]
    return subprocess.run([sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent", "--no-incremental",
                           *arguments], cwd=directory, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def mypy():
    pytest.importorskip("mypy", reason="mypy is in the dev dependency group; without it the check cannot run")
    return _mypy


def test_the_library_faces_are_clean_under_mypy_strict(mypy):
    checked = mypy(ROOT / "tests" / "typing", *CHECKED)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_mypy_strict_sees_a_wrong_call_of_the_library(mypy, tmp_path):
    (tmp_path / "wrong_use.py").write_text(
        "from capsudo.core import run\n\nresult = run(['true'], max_output='1M')\nprint(result.stdout + 1)\n")
    checked = mypy(tmp_path, "wrong_use")
    assert checked.returncode == 1
    assert 'Argument "max_output" to "run" has incompatible type "str"' in checked.stdout
    assert 'Unsupported operand types for + ("bytes" and "int")' in checked.stdout
