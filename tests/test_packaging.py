"""The distributions as users get them: one version, layered dependencies, wheels that work.

The fast tests read the pyproject.toml files; the slow one builds every
package's wheel with uv, installs the wheels into a fresh virtual environment
(the capsudo ones from the build only, their third-party dependencies from
the index) and runs that environment's own `capsudod` and `capsudo`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

import capsudo.proto

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = sorted(path.parent for path in ROOT.glob("packages/*/pyproject.toml"))
VERSION = capsudo.proto.__version__


def pyproject(directory: Path) -> dict:
    return tomllib.loads((directory / "pyproject.toml").read_text())["project"]


def capsudo_requirements(directory: Path) -> dict[str, Requirement]:
    requirements = (Requirement(line) for line in pyproject(directory).get("dependencies", []))
    return {requirement.name: requirement for requirement in requirements if requirement.name.startswith("capsudo-")}


def test_every_pyproject_states_the_version_of_capsudo_proto():
    stated = {str(directory.relative_to(ROOT)): pyproject(directory)["version"] for directory in [ROOT, *PACKAGES]}
    assert stated == dict.fromkeys(stated, VERSION)


def test_dependencies_between_packages_admit_this_release_and_not_the_next_series():
    version = Version(VERSION)
    next_series = f"{version.major}.{version.minor + 1}.0" if version.major == 0 else f"{version.major + 1}.0.0"
    for directory in PACKAGES:
        for name, requirement in capsudo_requirements(directory).items():
            assert requirement.specifier.contains(VERSION), f"{directory.name} -> {requirement}"
            assert not requirement.specifier.contains(next_series), f"{directory.name} -> {requirement}"


def test_every_package_declares_the_capsudo_layers_it_imports():
    # Installed from wheels, a layer that is only a dependency's dependency
    # could be left out or bounded differently; each declares what it uses.
    imports = re.compile(r"^\s*(?:from|import)\s+capsudo\.([a-z]+)", re.M)
    for directory in PACKAGES:
        own = pyproject(directory)["name"]
        used = {f"capsudo-{layer}" for source in directory.glob("src/**/*.py") for layer in imports.findall(source.read_text())}
        used.discard(own)
        assert used <= set(capsudo_requirements(directory)), f"{own} imports {sorted(used)}"


def test_the_version_costs_no_import_until_read():
    code = (
        "import json, sys\n"
        "import capsudo.proto\n"
        "before = set(sys.modules)\n"
        "version = capsudo.proto.__version__\n"
        "print(json.dumps([version, sorted(set(sys.modules) - before)]))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    version, loaded = json.loads(result.stdout)
    assert version == VERSION
    assert loaded == ["capsudo.proto._version"]


def find_uv() -> str | None:
    """uv as the Makefile finds it: on PATH, or the copy `make venv` installs into .uv/."""
    found = shutil.which("uv")
    if found:
        return found
    local = ROOT / ".uv" / "bin" / "uv"
    return str(local) if local.exists() else None


def run(argv: list[str], **options) -> subprocess.CompletedProcess:
    """Run a step of the install; a failure shows what the step said, not only its exit status."""
    result = subprocess.run(argv, capture_output=True, text=True, **options)
    assert result.returncode == 0, f"{' '.join(argv)}: exit {result.returncode}\n{result.stdout}{result.stderr}"
    return result


def wait_for_socket(path: Path, daemon: subprocess.Popen, log: Path, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if daemon.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"the installed capsudod did not start: {log.read_text()}")
        time.sleep(0.02)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_built_wheels_install_into_a_fresh_environment_and_work(tmp_path, sock_dir):
    uv = find_uv()
    if uv is None:
        pytest.skip("uv is not installed (neither on PATH nor in .uv/; `make venv` installs it)")
    dist = tmp_path / "dist"
    build_env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never", "UV_PYTHON": shutil.which("python3") or sys.executable}
    run([uv, "build", "--all-packages", "--out-dir", str(dist)], cwd=ROOT, env=build_env, timeout=120)

    names = [pyproject(directory)["name"] for directory in PACKAGES]
    license_text = (ROOT / "LICENSE").read_bytes()
    third_party = set()
    for directory, name in zip(PACKAGES, names):
        stem = f"{name.replace('-', '_')}-{VERSION}"
        wheel = dist / f"{stem}-py3-none-any.whl"
        assert wheel.exists(), f"{wheel.name} not built: {sorted(p.name for p in dist.iterdir())}"
        with zipfile.ZipFile(wheel) as archive:
            assert archive.read(f"{stem}.dist-info/licenses/LICENSE") == license_text, wheel.name
            assert f"capsudo/{directory.name}/py.typed" in archive.namelist(), wheel.name
            metadata = archive.read(f"{stem}.dist-info/METADATA").decode()
        assert "License-Expression: Apache-2.0" in metadata.splitlines(), wheel.name
        for line in metadata.splitlines():
            if line.startswith("Requires-Dist: ") and not line.removeprefix("Requires-Dist: ").startswith("capsudo-"):
                third_party.add(line.removeprefix("Requires-Dist: "))

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], timeout=60)
    python = str(venv / "bin" / "python")
    pip = [python, "-m", "pip", "--quiet", "--disable-pip-version-check"]
    clean_env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    # Third-party dependencies from the index; the capsudo names only from the
    # build (--no-index), never from a public index where someone else may own them.
    run([*pip, "install", *sorted(third_party)], env=clean_env, timeout=120)
    run([*pip, "install", "--no-index", "--find-links", str(dist), *names], env=clean_env, timeout=60)

    report = run(
        [python, "-c",
         "import importlib.metadata as m, json, capsudo.core, capsudo.proto\n"
         f"print(json.dumps([capsudo.proto.__version__, capsudo.core.__file__,"
         f" {{n: m.version(n) for n in {names!r}}}]))"],
        env=clean_env, cwd=tmp_path,
    )
    module_version, core_file, installed = json.loads(report.stdout)
    assert Path(core_file).is_relative_to(venv), core_file
    assert module_version == VERSION
    assert installed == dict.fromkeys(names, VERSION)
    for command in ("capsudo", "capsudod", "capsudod-pwauth", "capsudo-proxy"):
        assert (venv / "bin" / command).exists(), command

    socket_path = Path(sock_dir) / "packaged"
    log = tmp_path / "capsudod.log"
    with open(log, "wb") as log_file:
        daemon = subprocess.Popen([str(venv / "bin" / "capsudod"), "-S", str(socket_path)], stdin=subprocess.DEVNULL,
                                  stdout=log_file, stderr=log_file, env=clean_env, cwd=tmp_path)
    try:
        wait_for_socket(socket_path, daemon, log)
        client = [str(venv / "bin" / "capsudo"), "-S", str(socket_path), "--"]
        succeeded = subprocess.run([*client, "true"], capture_output=True, env=clean_env, cwd=tmp_path, timeout=20)
        assert (succeeded.returncode, succeeded.stderr) == (0, b"")
        echoed = subprocess.run([*client, "echo", "hi"], capture_output=True, env=clean_env, cwd=tmp_path, timeout=20)
        assert (echoed.returncode, echoed.stdout) == (0, b"hi\n")
    finally:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(10)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
