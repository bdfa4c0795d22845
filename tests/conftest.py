"""Shared fixtures and the `root` marker's skip rule.

Tests marked `root` (module-wide: `pytestmark = pytest.mark.root`) are
skipped unless the suite runs as root. Trio tests marked `deadline(seconds)`
fail with TooSlowError instead of hanging the run. `scratch_user` creates a throwaway
system user for tests that need an unprivileged peer, and removes it after.
"""

from __future__ import annotations

import functools
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile

import pytest
import trio


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "deadline(seconds): fail a trio test that runs longer, instead of hanging"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        marker = item.get_closest_marker("deadline")
        if marker is not None:
            # pytest-trio takes its runner from the first `trio` marker with run=.
            item.add_marker(pytest.mark.trio(run=functools.partial(_run_with_deadline, *marker.args)))


def _run_with_deadline(seconds: float, async_fn, **run_options):
    async def bounded():
        with trio.fail_after(seconds):
            return await async_fn()

    return trio.run(bounded, **run_options)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("root") is not None and os.geteuid() != 0:
        pytest.skip("needs root")


@pytest.fixture
def sock_dir():
    """A fresh directory with a short path, for Unix sockets.

    pytest's tmp_path can be long enough that a socket path inside it goes
    past sun_path's 108 bytes; this one stays around 20.
    """
    path = tempfile.mkdtemp(prefix="cs-", dir="/tmp")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def scratch_user():
    """(name, uid, gid) of a system user with its own group, created for the session."""
    if os.geteuid() != 0:
        pytest.skip("needs root to chown and create users")
    if shutil.which("useradd") is None or shutil.which("userdel") is None:
        pytest.skip("useradd/userdel not installed")
    name = f"cstest{secrets.token_hex(4)}"
    subprocess.run(
        ["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
         "--shell", "/usr/sbin/nologin", name],
        check=True,
        capture_output=True,
    )
    try:
        entry = pwd.getpwnam(name)
        yield name, entry.pw_uid, entry.pw_gid
    finally:
        subprocess.run(["userdel", name], check=False, capture_output=True)
