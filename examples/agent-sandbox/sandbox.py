"""An agent sandbox that holds only endpoints: `make demo-agent`, and the test's driver.

As root: a dedicated Unix user for the agent; a stand-in web service (a
process that records each SIGHUP); a capsudod endpoint `restart-web` owned
by the agent's user and pinned to a script that signals the service; and a
second endpoint, `shell`, that the agent does not hold. Then bubblewrap
starts the agent in namespaces of its own (mount, pid, net, ipc, uts) with
the system's programs read-only, its own empty home, no /root (only the
Python interpreter, if it lives there), no /etc/shadow, no SSH keys, and
/run/cap/restart-web bound in as its one privilege. bwrap runs as root
without a user namespace (unprivileged user namespaces are often disabled
or confined, as on Ubuntu 24.04), and setpriv drops to the agent's user,
with no capabilities and no_new_privs, before the agent starts.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

BIN = Path(sys.executable).parent
HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SERVICE = """\
import os, signal, sys, time
log = sys.argv[1]
signal.signal(signal.SIGHUP, lambda *_: open(log, "a").write(f"restarted {time.time()}\\n"))
open(sys.argv[2], "w").write(str(os.getpid()))
while True:
    time.sleep(3600)
"""


def _wait_for(path: Path, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {timeout}s")
        time.sleep(0.01)


@contextmanager
def agent_user():
    name = f"csagent{secrets.token_hex(3)}"
    subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/home/agent",
                    "--shell", "/usr/sbin/nologin", name], check=True, capture_output=True)
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], check=False, capture_output=True)


def _readable_roots() -> list[str]:
    """What the interpreter and our packages need, beyond /usr: the venv, the sources, the base Python."""
    roots = {sys.prefix, sys.base_prefix, str(ROOT / "packages"), str(HERE)}
    return sorted(root for root in roots if not root.startswith("/usr/"))


def bwrap_command(user: pwd.struct_passwd, cap_socket: Path, home: Path, other_socket: Path) -> list[str]:
    command = ["bwrap", "--die-with-parent", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
               "--new-session", "--clearenv", "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", "/home/agent",
               "--ro-bind", "/usr", "/usr", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
               "--tmpfs", "/root", "--tmpfs", "/home", "--tmpfs", "/run", "--tmpfs", "/etc"]
    for link in ("bin", "lib", "lib64", "sbin"):
        if os.path.islink(f"/{link}"):
            command += ["--symlink", os.readlink(f"/{link}"), f"/{link}"]
        elif os.path.isdir(f"/{link}"):
            command += ["--ro-bind", f"/{link}", f"/{link}"]
    for entry in ("passwd", "group", "nsswitch.conf", "ld.so.cache", "localtime"):
        if os.path.exists(f"/etc/{entry}"):
            command += ["--ro-bind", f"/etc/{entry}", f"/etc/{entry}"]
    for root in _readable_roots():
        # Without a user namespace bwrap makes a bind's missing parents 0700: the agent could not pass.
        parents = [str(parent) for parent in reversed(Path(root).parents) if str(parent) != "/"]
        for parent in parents:
            command += ["--perms", "0755", "--dir", parent]
        command += ["--ro-bind", root, root]
    command += ["--bind", str(home), "/home/agent", "--dir", "/run/cap",
                "--bind", str(cap_socket), "/run/cap/restart-web", "--chdir", "/home/agent"]
    drop = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", "--inh-caps=-all",
            "--bounding-set=-all", "--no-new-privs"]
    return [*command, *drop, sys.executable, str(HERE / "agent.py"), str(BIN / "capsudo-mcp"), str(other_socket)]


def run_sandbox() -> dict:
    """Set everything up, run the agent once, tear down; the agent's report and what the host saw."""
    work = Path(tempfile.mkdtemp(prefix="cs-agent-", dir="/tmp"))
    started: list[subprocess.Popen] = []
    try:
        with agent_user() as user:
            (work / "service").mkdir(mode=0o700)
            log, pid_file = work / "service" / "restarts", work / "service" / "pid"
            started.append(subprocess.Popen([sys.executable, "-c", SERVICE, str(log), str(pid_file)]))
            _wait_for(pid_file)
            caps = work / "cap"
            caps.mkdir(mode=0o755)
            restart = (f'kill -HUP {pid_file.read_text()} && echo "web restarted"')
            for name, program in (("restart-web", ["/bin/sh", "-c", restart]), ("shell", ["/bin/sh"])):
                owner = f"{user.pw_uid}:{user.pw_gid}" if name == "restart-web" else "0:0"
                started.append(subprocess.Popen([str(BIN / "capsudod"), "-S", str(caps / name), "-o", owner,
                                                 "-m", "0600", "-f", "-E", "--", *program],
                                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
                _wait_for(caps / name)
            home = work / "home"
            home.mkdir(mode=0o700)
            os.chown(home, user.pw_uid, user.pw_gid)
            result = subprocess.run(bwrap_command(user, caps / "restart-web", home, caps / "shell"),
                                    capture_output=True, text=True, timeout=60)
            if result.returncode != 0:
                raise RuntimeError(f"the agent failed ({result.returncode}): {result.stderr.strip()}")
            report = json.loads(result.stdout.strip().splitlines()[-1])
            time.sleep(0.1)  # the service's handler writes after the signal
            report["host: service restarts"] = log.read_text().count("restarted") if log.exists() else 0
            report["host: agent user"] = user.pw_name
            report["host: files the agent left"] = sorted(os.listdir(home))
            return report
    finally:
        for process in started:
            process.send_signal(signal.SIGTERM)
        for process in started:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
        subprocess.run(["rm", "-rf", str(work)], check=False)


def main() -> int:
    if os.geteuid() != 0:
        sys.stderr.write("sandbox.py: error: run it as root (it creates a user and starts bubblewrap)\n")
        return 1
    report = run_sandbox()
    for key, value in report.items():
        print(f"{key:28} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
