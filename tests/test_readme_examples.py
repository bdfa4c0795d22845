"""The README's shell examples, copied as they are, after `make install`.

The shell blocks of the sections whose examples run on one machine are cut
into command lines (a trailing backslash joins lines, a `#` starts a
comment) and run in a private mount and network namespace, with the install
bound on /usr/local (as tests/test_install.py does), a fresh /run, and
build-host naming 127.0.0.1. Only the programs that would change the machine
are replaced (DESTRUCTIVE). A line ending in `&` runs in the background
until its socket or port answers; a daemon's line and `install` run as root,
a `capsudo` line as a user the test creates in the group the README names,
and must exit 0 with output.

Not run: "Password-gated endpoints" (a password typed at a terminal, and a
PAM file installed in /etc/pam.d: tests/pwauth covers it) and "Across a
boundary" (another host, and an ssh login to it).
"""

from __future__ import annotations

import grp
import json
import pwd
import re
import secrets
import shutil
import subprocess
import sys
import textwrap

import pytest

from test_packaging import ROOT, find_uv, run

pytestmark = pytest.mark.root

SECTIONS = ("Use", "Delegation composes")
# What stands in for each program that would change the machine.
DESTRUCTIVE = {"/sbin/reboot": "/bin/date", "systemctl": "/bin/echo systemctl"}
GROUP = "sudo"  # the group the README's sockets are owned by
# The TLS example's files, in the directory the lines run in: our CA signs
# the daemon's certificate, clients-ca.pem the clients'.
TLS_FILES = ("ca.pem", "daemon.pem", "daemon.key", "clients-ca.pem", "me.pem", "me.key")


def shell_lines(markdown: str, section: str) -> list[str]:
    """The command lines of the ```sh blocks under the `## section` heading."""
    body = re.search(rf"^## {re.escape(section)}\n(.*?)(?=^## )", markdown, re.M | re.S)
    assert body, f"README has no section {section!r}"
    lines = []
    for block in re.findall(r"^```sh\n(.*?)^```", body.group(1), re.M | re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"(^|\s)#.*", "", line).strip()
            if line:
                lines.append(line)
    return lines


def standing_in(line: str) -> str:
    for program, stand_in in DESTRUCTIVE.items():
        line = re.sub(rf"(?<![\w/]){re.escape(program)}(?![\w/])", stand_in, line)
    return line


def test_shell_lines_are_cut_as_a_reader_copies_them():
    text = "## Use\n\n```sh\n# a comment\nfoo -S /x \\\n    -m 0660 &   # why\nbar\n```\n\n## Next\n"
    assert shell_lines(text, "Use") == ["foo -S /x      -m 0660 &", "bar"]
    assert standing_in("capsudod -fE -- /sbin/reboot &") == "capsudod -fE -- /bin/date &"
    assert standing_in("-E -- systemctl restart nginx.service") == "-E -- /bin/echo systemctl restart nginx.service"


# Runs as root in the namespaces: argv is destdir, the work directory, uid, gid, the lines as JSON.
SCENARIO = textwrap.dedent("""
    import json, os, re, signal, socket, subprocess, sys, time
    destdir, work, uid, gid, lines = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), json.loads(sys.argv[5])
    subprocess.run(["mount", "--bind", destdir + "/usr/local", "/usr/local"], check=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", "/run"], check=True)
    with open(work + "/hosts", "w") as hosts:
        hosts.write("127.0.0.1 localhost build-host\\n")
    subprocess.run(["mount", "--bind", work + "/hosts", "/etc/hosts"], check=True)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/"}
    import grp
    as_user = dict(user=uid, group=gid, extra_groups=[grp.getgrnam("sudo").gr_gid])

    def answers(address):
        if address.startswith("tls://"):
            host, port = address[len("tls://"):].rsplit(":", 1)
            try:
                socket.create_connection(("127.0.0.1", int(port)), timeout=1).close()
                return True
            except OSError:
                return False
        return os.path.exists(address)

    background, results = [], []
    try:
        for line in lines:
            command = line.rstrip("&").strip()
            who = as_user if command.startswith("capsudo ") else {}
            if line.endswith("&"):
                address = re.findall(r"-S (\\S+)", command)[-1]
                if answers(address):  # another example's socket would answer for this one
                    results.append([line, -1, "", address + " was already taken before this line"])
                    raise SystemExit
                process = subprocess.Popen(["sh", "-c", command], cwd=work, env=env, stdin=subprocess.DEVNULL,
                                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                           start_new_session=True, **who)
                background.append(process)
                deadline = time.monotonic() + 15
                while not answers(address):
                    if process.poll() is not None or time.monotonic() > deadline:
                        results.append([line, process.poll(), "", process.stderr.read() if process.poll() is not None else "no answer"])
                        raise SystemExit
                    time.sleep(0.02)
                results.append([line, None, "", ""])
            else:
                done = subprocess.run(["sh", "-c", command], cwd=work, env=env, stdin=subprocess.DEVNULL,
                                      capture_output=True, text=True, timeout=20, **who)
                results.append([line, done.returncode, done.stdout, done.stderr])
    finally:
        # The whole group: sh may not exec the command it was given.
        for process in reversed(background):
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(10)
        for process in reversed(background):
            try:
                os.killpg(process.pid, 0)
                time.sleep(0.5)  # a client's program (the narrow daemon) is the far daemon's to end
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        print(json.dumps(results))
""")


@pytest.fixture
def sudo_user():
    """(name, uid, gid) of a user made for the test, in the group the README's sockets belong to."""
    if shutil.which("useradd") is None or shutil.which("userdel") is None:
        pytest.skip("useradd/userdel not installed")
    try:
        grp.getgrnam(GROUP)
    except KeyError:
        pytest.skip(f"the system has no group {GROUP!r}")
    name = f"csreadme{secrets.token_hex(3)}"
    subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                    "--shell", "/usr/sbin/nologin", "-G", GROUP, name], check=True, capture_output=True)
    try:
        entry = pwd.getpwnam(name)
        yield name, entry.pw_uid, entry.pw_gid
    finally:
        subprocess.run(["userdel", name], capture_output=True)


def write_tls_files(directory) -> None:
    trustme = pytest.importorskip("trustme")
    ours, clients = trustme.CA(), trustme.CA()
    ours.cert_pem.write_to_path(str(directory / "ca.pem"))
    daemon = ours.issue_cert("build-host")
    daemon.cert_chain_pems[0].write_to_path(str(directory / "daemon.pem"))
    daemon.private_key_pem.write_to_path(str(directory / "daemon.key"))
    clients.cert_pem.write_to_path(str(directory / "clients-ca.pem"))
    me = clients.issue_cert("me@laptop")
    me.cert_chain_pems[0].write_to_path(str(directory / "me.pem"))
    me.private_key_pem.write_to_path(str(directory / "me.key"))


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_the_readme_examples_run_as_written_after_make_install(tmp_path, sudo_user):
    uv = find_uv()
    if uv is None:
        pytest.skip("uv is not installed (neither on PATH nor in .uv/; `make venv` installs it)")
    for tool in ("make", "unshare", "ip"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")
    destdir = tmp_path / "root"
    run(["make", "--no-print-directory", "install", f"DESTDIR={destdir}", "PREFIX=/usr/local", f"UV={uv}"],
        cwd=ROOT, timeout=60)
    work = tmp_path / "work"
    work.mkdir()
    write_tls_files(work)
    _, uid, gid = sudo_user
    for path in (tmp_path, destdir, work):
        path.chmod(0o755)
    for name in TLS_FILES:
        (work / name).chmod(0o644)  # me.key is the user's to read, as it would be in their home
    markdown = (ROOT / "README.md").read_text()
    lines = [standing_in(line) for section in SECTIONS for line in shell_lines(markdown, section)]
    assert any("/bin/date" in line for line in lines), "the README no longer pins /sbin/reboot"

    scenario = run(["unshare", "--mount", "--net", "--propagation", "private", sys.executable, "-c", SCENARIO,
                    str(destdir), str(work), str(uid), str(gid), json.dumps(lines)], timeout=90)
    results = json.loads(scenario.stdout)
    print(json.dumps(results, indent=1))
    assert [line for line, *_ in results] == lines, results
    for line, status, stdout, stderr in results:
        if line.endswith("&"):
            assert status is None, f"{line}: exited {status}: {stderr}"
        elif line.startswith("capsudo "):
            assert status == 0 and stdout.strip(), f"{line}: status {status}, stdout {stdout!r}, stderr {stderr!r}"
        else:
            assert status == 0, f"{line}: status {status}: {stderr}"
    outputs = {line: stdout for line, _, stdout, _ in results}
    assert "uid=0(root)" in outputs["capsudo -S /run/capsudo/sudo -- id"]
    assert outputs["capsudo -S /run/capsudo/restart -- nginx.service"] == "systemctl restart nginx.service\n"
