"""`make install` as an operator runs it, then the installed commands as a user would.

The install goes into a DESTDIR for PREFIX=/usr/local; a private mount
namespace then puts it at /usr/local (bind mount), so that the launchers'
own paths, the environment's readability and PATH are those of a real
install, without touching the machine's /usr/local. There the installed
capsudod serves as root, and a user created by the test, in the group that
may reach the socket, runs a session and a delegation through it.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from test_packaging import ROOT, find_uv, run

pytestmark = pytest.mark.root
COMMANDS = ("capsudo", "capsudod", "capsudod-pwauth", "capsudo-proxy", "capsudoctl")

# Runs as root inside the mount namespace: argv is destdir, socket directory, uid, gid.
SCENARIO = textwrap.dedent("""
    import json, os, subprocess, sys, time
    destdir, sockets, uid, gid = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    subprocess.run(["mount", "--bind", destdir + "/usr/local", "/usr/local"], check=True)
    user_env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/"}
    as_user = dict(user=uid, group=gid, extra_groups=[], env=user_env, capture_output=True, text=True, timeout=20)

    def wait_for(path):
        deadline = time.monotonic() + 15
        while not os.path.exists(path):
            assert time.monotonic() < deadline, path + " never appeared"
            time.sleep(0.02)

    broad, narrow = sockets + "/root", sockets + "/narrow"
    daemon = subprocess.Popen(["/usr/local/bin/capsudod", "-S", broad, "-o", f"root:{gid}", "-m", "0770"],
                              stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={"PATH": "/usr/bin:/bin"})
    results = {}
    try:
        wait_for(broad)
        date = subprocess.run(["capsudo", "-S", broad, "--", "/bin/date", "+%Y"], **as_user)
        who = subprocess.run(["capsudo", "-S", broad, "--", "id", "-u"], **as_user)
        results["date"] = [date.returncode, date.stdout, date.stderr]
        results["id"] = [who.returncode, who.stdout, who.stderr]
        # Delegation: the program `capsudod` is found on the PATH the client sent.
        holder = subprocess.Popen(["capsudo", "-S", broad, "--", "capsudod", "-S", narrow, "-o", f"root:{gid}",
                                   "-f", "--", "/bin/echo", "narrow"],
                                  user=uid, group=gid, extra_groups=[], env=user_env,
                                  stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            wait_for(narrow)
            delegated = subprocess.run(["capsudo", "-S", narrow, "--", "ignored"], **as_user)
            results["delegated"] = [delegated.returncode, delegated.stdout, delegated.stderr]
        finally:
            holder.terminate()
            holder.wait(10)
    finally:
        daemon.terminate()
        daemon.wait(10)
    print(json.dumps(results))
""")


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_make_install_puts_working_commands_on_every_users_path(tmp_path, sock_dir, scratch_user):
    uv = find_uv()
    if uv is None:
        pytest.skip("uv is not installed (neither on PATH nor in .uv/; `make venv` installs it)")
    if shutil.which("unshare") is None or shutil.which("make") is None:
        pytest.skip("needs make and unshare (util-linux)")
    destdir = tmp_path / "root"
    run(["make", "--no-print-directory", "install", f"DESTDIR={destdir}", "PREFIX=/usr/local", f"UV={uv}"],
        cwd=ROOT, timeout=60)

    local = destdir / "usr" / "local"
    for command in COMMANDS:
        launcher = local / "bin" / command
        assert stat.S_IMODE(launcher.stat().st_mode) == 0o755, command
        assert launcher.read_text().startswith("#!/usr/local/lib/capsudo/bin/python -I\n"), command
    environment = local / "lib" / "capsudo"
    writable = [str(path) for path in environment.rglob("*")
                if not path.is_symlink() and path.stat().st_mode & (stat.S_IWGRP | stat.S_IWOTH)]
    assert writable == []
    unreadable = [str(path) for path in environment.rglob("*")
                  if not path.is_symlink() and not path.stat().st_mode & stat.S_IROTH]
    assert unreadable == []
    assert list(environment.rglob("capsudo/daemon/__pycache__/_server.cpython-*.pyc")), "no bytecode compiled"
    units = {path.name for path in (local / "lib" / "systemd" / "system").iterdir()}
    assert units == {"capsudod.service", "capsudod.socket", "capsudod-endpoint@.socket",
                     "capsudod@.socket", "capsudod@.service"}
    assert (destdir / "etc" / "pam.d" / "capsudo").read_bytes() == (ROOT / "examples" / "pam.d" / "capsudo").read_bytes()
    # The man pages where man looks, the completions where each shell looks.
    manuals = {path.relative_to(local / "share" / "man").as_posix() for path in (local / "share" / "man").rglob("*.[1-8]")}
    assert manuals == {"man1/capsudo.1", "man5/capsudo.toml.5", "man8/capsudod.8", "man8/capsudod-pwauth.8",
                       "man8/capsudo-proxy.8", "man8/capsudoctl.8"}
    file_page = local / "share" / "man" / "man5" / "capsudo.toml.5"
    assert file_page.read_bytes() == (ROOT / "man" / "capsudo.toml.5").read_bytes()
    assert stat.S_IMODE(file_page.stat().st_mode) == 0o644
    completions = {"bash": local / "share" / "bash-completion" / "completions" / "{}",
                   "zsh": local / "share" / "zsh" / "site-functions" / "_{}",
                   "fish": local / "share" / "fish" / "vendor_completions.d" / "{}.fish"}
    for shell, pattern in completions.items():
        for command in COMMANDS:
            installed = Path(str(pattern).format(command))
            source = ROOT / "share" / "completions" / shell / installed.name
            assert installed.read_bytes() == source.read_bytes(), installed
            assert stat.S_IMODE(installed.stat().st_mode) == 0o644, installed
    assert (destdir / "etc" / "capsudo" / "endpoints").is_dir()

    # A second install leaves an operator's PAM file alone.
    (destdir / "etc" / "pam.d" / "capsudo").write_text("# the operator's own\n")
    run(["make", "--no-print-directory", "install", f"DESTDIR={destdir}", "PREFIX=/usr/local", f"UV={uv}"],
        cwd=ROOT, timeout=60)
    assert (destdir / "etc" / "pam.d" / "capsudo").read_text() == "# the operator's own\n"

    _, uid, gid = scratch_user
    os.chmod(sock_dir, 0o755)
    scenario = run(["unshare", "--mount", "--propagation", "private", sys.executable, "-c", SCENARIO,
                    str(destdir), sock_dir, str(uid), str(gid)], timeout=60)
    results = json.loads(scenario.stdout)
    assert results["date"][0] == 0 and results["date"][1].strip().isdigit(), results["date"]
    assert results["id"] == [0, "0\n", ""]
    # The narrow endpoint pins its command: the client is told its argument went unused.
    assert results["delegated"] == [0, "narrow\n", "capsudo: note: this endpoint ignores arguments ('ignored'): "
                                                    "ran /bin/echo narrow\n"]
