"""Faults: the process and descriptor limits reached mid-run, and the daemon killed.

Process-table limit. RLIMIT_NPROC does not bind root, so the daemon runs as
a user created for the run (and removed after). Sessions come one every
PROBE_INTERVAL throughout; after a quiet start the daemon's soft
RLIMIT_NPROC is lowered (`prlimit --pid` on the live process, run as that
user) to the number of tasks that user has, so that neither a program nor a
thread can be started; PRESSURE seconds later it is put back.

Descriptor limit. The daemon (as root) gets its soft RLIMIT_NOFILE lowered
the same way, in two steps: first to one more than it has open (a
connection can be accepted but the three delegated descriptors cannot be
received: the session must be refused with an error), then to exactly what
it has open (accept() itself fails with EMFILE: the daemon must back off,
not spin; clients wait in the listen backlog and are served once the limit
is back).

For each phase the script counts the sessions that succeeded and were
refused, keeps one refusal's text, and reads the daemon's CPU time (utime +
stime from /proc/PID/stat) over the phase.

Killed mid-session. `capsudo -- sleep 30`, then `kill -9` on the daemon:
the client must exit 1 with one line on stderr, promptly. The same through
a real pty (pexpect) with `capsudo -i`: the terminal's settings
(tcgetattr on the pty) must be raw during the session and exactly the
original ones after the daemon's death.

Targets: at each limit, sessions refused with an error and none left
hanging, the daemon's CPU under 10% of one core while under pressure, and
sessions served again within 3 s of the pressure ending; after kill -9, the
client's one-line error within 2 s and, interactive, the terminal restored.

    .venv/bin/python benchmarks/faults.py
"""

from __future__ import annotations

import os
import pwd
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import termios
import threading
import time

from _harness import CAPSUDO, CAPSUDOD, Daemon, Verdict, ms, stop_process, table, wait_until_connectable
from memory import descriptors

from capsudo.core import ClientError, run

PROBE_INTERVAL = 0.1
QUIET = 1.0
PRESSURE = 3.0
RECOVERY_TARGET = 3.0
CPU_TARGET = 0.10
KILL_REPORT_TARGET = 2.0
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of stat(5); fields[0] is field 3.
    return (int(fields[11]) + int(fields[12])) / TICKS


class Probes:
    """One session every PROBE_INTERVAL, each in its own thread, with its outcome and time."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.devnull = os.open(os.devnull, os.O_RDWR)
        self.outcomes: list[tuple[float, float, int, list[str]]] = []  # (started, ended, status, errors)
        self.threads: list[threading.Thread] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.ticker = threading.Thread(target=self._tick)

    def _one(self) -> None:
        started = time.monotonic()
        try:
            result = run(["true"], endpoint=self.endpoint, stdin=self.devnull, stdout=self.devnull, stderr=self.devnull)
            status, errors = result.status, list(result.errors)
        except ClientError as exc:
            # What the command line would print as its one line.
            status, errors = exc.status, [str(exc)]
        except Exception as exc:
            status, errors = None, [f"{type(exc).__name__}: {exc}"]
        with self.lock:
            self.outcomes.append((started, time.monotonic(), status, errors))

    def _tick(self) -> None:
        while not self.stopping.wait(PROBE_INTERVAL):
            thread = threading.Thread(target=self._one)
            thread.start()
            self.threads.append(thread)

    def __enter__(self) -> "Probes":
        self.ticker.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stopping.set()
        self.ticker.join()
        for thread in self.threads:
            thread.join(60)
        os.close(self.devnull)

    def started_between(self, start: float, end: float):
        with self.lock:
            return [outcome for outcome in self.outcomes if start <= outcome[0] < end]


class Phase:
    """A stretch of time: its bounds and the daemon's CPU time over it."""

    def __init__(self, name: str, pid: int, log_path: str | None = None) -> None:
        self.name, self.pid, self.log_path = name, pid, log_path
        self.log = ""

    def _log_size(self) -> int:
        return os.path.getsize(self.log_path) if self.log_path else 0

    def __enter__(self) -> "Phase":
        self.start, self.cpu_start, self.log_start = time.monotonic(), cpu_seconds(self.pid), self._log_size()
        return self

    def __exit__(self, *exc_info) -> None:
        self.end, self.cpu = time.monotonic(), cpu_seconds(self.pid) - self.cpu_start
        if self.log_path:
            with open(self.log_path) as log:
                log.seek(self.log_start)
                self.log = log.read(self._log_size() - self.log_start)

    @property
    def cpu_share(self) -> float:
        return self.cpu / (self.end - self.start)


def phase_rows(phases: list[Phase], probes: Probes) -> list[list[str]]:
    rows = []
    for phase in phases:
        outcomes = probes.started_between(phase.start, phase.end)
        served = sum(1 for _, _, status, errors in outcomes if status == 0 and not errors)
        refused = [errors for _, _, status, errors in outcomes if status != 0]
        sample = refused[0][0] if refused and refused[0] else "-"
        rows.append([phase.name, f"{phase.end - phase.start:.1f} s", str(served), str(len(refused)),
                     f"{phase.cpu:.2f} s ({phase.cpu_share:.1%})", sample[:70]])
    return rows


def recovery(probes: Probes, released_at: float) -> float:
    """Seconds from the release of the pressure to the end of the first session that then succeeded."""
    with probes.lock:
        ends = [ended for _, ended, status, errors in probes.outcomes if status == 0 and not errors and ended >= released_at]
    return min(ends) - released_at if ends else float("inf")


def check_no_client_crashed(verdict: Verdict, name: str, probes: Probes) -> None:
    crashed = [errors[0] for _, _, status, errors in probes.outcomes if status is None]
    verdict.check(f"{name}: every client ended with a status", f"{len(crashed)} raised" + (f", e.g. {crashed[0]}" if crashed else ""),
                  not crashed)


PHASE_HEADER = ["phase", "length", "served", "refused", "daemon CPU", "a refusal, as the client reports it"]


class ScratchUser:
    """A system user created for the run and removed after."""

    def __enter__(self) -> "ScratchUser":
        self.name = f"csfault{secrets.token_hex(3)}"
        subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                        "--shell", "/usr/sbin/nologin", self.name], check=True, capture_output=True)
        entry = pwd.getpwnam(self.name)
        self.uid, self.gid = entry.pw_uid, entry.pw_gid
        return self

    def __exit__(self, *exc_info) -> None:
        subprocess.run(["userdel", self.name], check=False, capture_output=True)


def tasks_of(uid: int) -> int:
    """Threads of every process of uid: what RLIMIT_NPROC counts."""
    count = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}").st_uid == uid:
                count += len(os.listdir(f"/proc/{entry}/task"))
        except OSError:
            continue
    return count


def process_limits(pid: int) -> tuple[str, str]:
    """The (soft, hard) RLIMIT_NPROC of pid, as /proc/PID/limits shows them."""
    with open(f"/proc/{pid}/limits") as limits:
        for line in limits:
            if line.startswith("Max processes"):
                soft, hard = line[len("Max processes"):].split()[:2]
                return soft, hard
    raise RuntimeError("no Max processes in /proc/PID/limits")


def set_process_limit(user: "ScratchUser", pid: int, soft: str, hard: str) -> None:
    # prlimit(2) on another user's process takes CAP_SYS_RESOURCE, which root
    # may not hold in a container; the daemon's own user may always change it.
    subprocess.run(["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--clear-groups",
                    "prlimit", "--pid", str(pid), f"--nproc={soft}:{hard}"], check=True, capture_output=True)


def process_limit(verdict: Verdict) -> None:
    if os.geteuid() != 0 or not all(shutil.which(tool) for tool in ("useradd", "setpriv", "prlimit")):
        print("RLIMIT_NPROC: skipped (needs root, useradd, setpriv and prlimit to run the daemon as another user)\n")
        return
    directory = tempfile.mkdtemp(prefix="capsudo-faults-")
    os.chmod(directory, 0o1777)  # the daemon, as the scratch user, binds its socket here (sticky, or it refuses)
    endpoint = os.path.join(directory, "endpoint")
    log_path = os.path.join(directory, "capsudod.log")
    with ScratchUser() as user, open(log_path, "wb") as log:
        daemon = subprocess.Popen(
            ["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--clear-groups",
             CAPSUDOD, "-S", endpoint, "-m", "0777"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        try:
            wait_until_connectable(endpoint, daemon)
            original = process_limits(daemon.pid)
            phases = []
            with Probes(endpoint) as probes:
                with Phase("before", daemon.pid) as phase:
                    time.sleep(QUIET)
                phases.append(phase)
                with Phase("RLIMIT_NPROC reached", daemon.pid) as phase:
                    reached = tasks_of(user.uid)
                    set_process_limit(user, daemon.pid, str(reached), original[1])
                    time.sleep(PRESSURE)
                    set_process_limit(user, daemon.pid, *original)
                phases.append(phase)
                with Phase("after", daemon.pid) as phase:
                    time.sleep(QUIET)
                phases.append(phase)
            alive = daemon.poll() is None
        finally:
            stop_process(daemon)
    daemon_log = open(log_path).read()
    shutil.rmtree(directory, ignore_errors=True)

    print(f"RLIMIT_NPROC lowered to {reached} (the tasks of the daemon's user) for {PRESSURE:g} s,"
          f" a session every {PROBE_INTERVAL:g} s throughout")
    print(table(PHASE_HEADER, phase_rows(phases, probes)))
    print()
    pressure = phases[1]
    refused = [o for o in probes.started_between(pressure.start, pressure.end) if o[2] != 0]
    hung = [o for o in probes.outcomes if o[1] - o[0] > 30]
    verdict.check("RLIMIT_NPROC: sessions refused with an error",
                  f"{len(refused)} refused", bool(refused) and all(errors for *_, errors in refused))
    verdict.check("RLIMIT_NPROC: no session left hanging", f"{len(hung)} over 30 s", not hung)
    check_no_client_crashed(verdict, "RLIMIT_NPROC", probes)
    verdict.check(f"RLIMIT_NPROC: daemon CPU < {CPU_TARGET:.0%} under pressure", f"{pressure.cpu_share:.1%}",
                  pressure.cpu_share < CPU_TARGET)
    back = recovery(probes, pressure.end)
    verdict.check(f"RLIMIT_NPROC: served again within {RECOVERY_TARGET:g} s", ms(back), back < RECOVERY_TARGET)
    verdict.check("RLIMIT_NPROC: daemon still running", "running" if alive else daemon_log[-300:], alive)


def descriptor_limit(verdict: Verdict) -> None:
    with Daemon() as daemon:
        original = resource.prlimit(daemon.pid, resource.RLIMIT_NOFILE)
        idle = descriptors(daemon.pid)  # no session open yet: the daemon's own
        phases = []
        with Probes(daemon.socket) as probes:
            with Phase("before", daemon.pid) as phase:
                time.sleep(QUIET)
            phases.append(phase)
            with Phase("RLIMIT_NOFILE = open + 1", daemon.pid) as phase:
                resource.prlimit(daemon.pid, resource.RLIMIT_NOFILE, (idle + 1, original[1]))
                time.sleep(PRESSURE)
                resource.prlimit(daemon.pid, resource.RLIMIT_NOFILE, original)
            phases.append(phase)
            # A moment of relief, so that the next phase starts from a daemon that accepts.
            with Phase("limit back", daemon.pid) as phase:
                time.sleep(QUIET)
            phases.append(phase)
            with Phase("RLIMIT_NOFILE = open", daemon.pid, daemon.log_path) as phase:
                resource.prlimit(daemon.pid, resource.RLIMIT_NOFILE, (idle, original[1]))
                time.sleep(PRESSURE)
                resource.prlimit(daemon.pid, resource.RLIMIT_NOFILE, original)
            phases.append(phase)
            with Phase("after", daemon.pid) as phase:
                time.sleep(QUIET)
            phases.append(phase)
        alive = daemon.process.poll() is None
        final_fds = descriptors(daemon.pid)
        daemon_log = open(daemon.log_path).read()

    print(f"RLIMIT_NOFILE lowered to {idle + 1}, then {idle} (the daemon had {idle} open),"
          f" {PRESSURE:g} s each with {QUIET:g} s between, a session every {PROBE_INTERVAL:g} s throughout")
    print(table(PHASE_HEADER, phase_rows(phases, probes)))
    one_more, at_limit = phases[1], phases[3]
    backlog = [o for o in probes.started_between(at_limit.start, at_limit.end)]
    waited = [o[1] - at_limit.end for o in backlog]
    print(f"sessions started while accept() failed: {len(backlog)}, served once the limit was back"
          f" after {ms(max(waited)) if waited else '-'} at most")
    said = [line for line in at_limit.log.splitlines() if "accept" in line]
    print("the daemon's log while accept() failed: " + (" / ".join(said) or "-"))
    print()
    refused = [o for o in probes.started_between(one_more.start, one_more.end) if o[2] != 0]
    verdict.check("RLIMIT_NOFILE open+1: sessions refused with an error", f"{len(refused)} refused",
                  bool(refused) and all(errors for *_, errors in refused))
    # One line when accept() starts failing, not one per retry (a log flood is a spin too).
    failures_logged = sum("cannot accept" in line for line in said)
    verdict.check("RLIMIT_NOFILE open: accept() failure logged once",
                  f"{failures_logged} line(s) in {at_limit.end - at_limit.start:.1f} s", failures_logged == 1)
    for phase in (one_more, at_limit):
        verdict.check(f"{phase.name}: daemon CPU < {CPU_TARGET:.0%}", f"{phase.cpu_share:.1%}", phase.cpu_share < CPU_TARGET)
    served_late = [o for o in backlog if o[2] == 0 and not o[3]]
    verdict.check("RLIMIT_NOFILE open: waiting clients served after the pressure", f"{len(served_late)} of {len(backlog)}",
                  bool(backlog) and len(served_late) == len(backlog) and max(waited) < RECOVERY_TARGET)
    back = recovery(probes, at_limit.end)
    verdict.check(f"RLIMIT_NOFILE: served again within {RECOVERY_TARGET:g} s", ms(back), back < RECOVERY_TARGET)
    verdict.check("RLIMIT_NOFILE: descriptors back to the idle count", f"{idle} -> {final_fds}", final_fds == idle)
    check_no_client_crashed(verdict, "RLIMIT_NOFILE", probes)
    verdict.check("RLIMIT_NOFILE: daemon still running", "running" if alive else daemon_log[-300:], alive)


def wait_for_child(pid: int, timeout: float = 10) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as stat:
                        if int(stat.read().rsplit(")", 1)[1].split()[1]) == pid:
                            return int(entry)
                except OSError:
                    continue
        time.sleep(0.02)
    raise RuntimeError("the daemon started no program")


def running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def killed_plain(verdict: Verdict) -> list[str]:
    # The client's stderr goes to a file, not a pipe: the program holds a copy
    # of it, and would keep a pipe open past the client's end.
    with Daemon() as daemon, tempfile.TemporaryFile() as stderr:
        client = subprocess.Popen([CAPSUDO, "-S", daemon.socket, "--", "sleep", "30"], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=stderr)
        program = wait_for_child(daemon.pid)
        killed_at = time.monotonic()
        daemon.process.kill()
        client.wait(30)
        reported = time.monotonic() - killed_at
        stderr.seek(0)
        err = stderr.read()
        time.sleep(0.5)
        orphan = running(program)
        if orphan:
            os.killpg(program, signal.SIGKILL)
    line = err.decode()
    verdict.check("kill -9: client exits 1 with one line", f"status {client.returncode}, {line.count(chr(10))} line(s)",
                  client.returncode == 1 and line.count("\n") == 1 and line.startswith("capsudo: error: "))
    verdict.check(f"kill -9: reported within {KILL_REPORT_TARGET:g} s", ms(reported), reported < KILL_REPORT_TARGET)
    return ["capsudo -- sleep 30", f"{client.returncode}", line.strip(), ms(reported),
            "still running (no supervisor left)" if orphan else "gone"]


def killed_interactive(verdict: Verdict) -> list[str]:
    import pexpect

    with Daemon() as daemon:
        shell = pexpect.spawn("/bin/sh", env={"PS1": "ready> ", "PATH": os.environ.get("PATH", ""), "TERM": "xterm"},
                              dimensions=(24, 80), timeout=15)
        try:
            shell.expect_exact("ready> ")
            before = termios.tcgetattr(shell.child_fd)
            shell.sendline(f"{CAPSUDO} -S {daemon.socket} -i -- sleep 30; echo status=$?")
            program = wait_for_child(daemon.pid)
            deadline = time.monotonic() + 10
            while (during := termios.tcgetattr(shell.child_fd)) == before and time.monotonic() < deadline:
                time.sleep(0.02)
            killed_at = time.monotonic()
            daemon.process.kill()
            shell.expect(r"status=(\d+)")
            reported = time.monotonic() - killed_at
            status = int(shell.match.group(1))
            transcript = shell.before.decode(errors="replace")
            shell.expect_exact("ready> ")
            after = termios.tcgetattr(shell.child_fd)
            time.sleep(0.5)
            orphan = running(program)
            if orphan:
                os.killpg(program, signal.SIGKILL)
        finally:
            shell.close(force=True)
    errors = [line.strip() for line in transcript.splitlines() if "capsudo: error:" in line]
    raw_during = not during[3] & termios.ICANON and not during[3] & termios.ECHO
    verdict.check("kill -9, interactive: raw mode during the session", "raw" if raw_during else "not raw", raw_during)
    verdict.check("kill -9, interactive: terminal settings restored (tcgetattr)", "identical" if after == before else "DIFFER",
                  after == before)
    verdict.check("kill -9, interactive: exit 1 with one error line", f"status {status}, {len(errors)} line(s)",
                  status == 1 and len(errors) == 1)
    verdict.check(f"kill -9, interactive: reported within {KILL_REPORT_TARGET:g} s", ms(reported),
                  reported < KILL_REPORT_TARGET)
    return ["capsudo -i -- sleep 30 (pty)", str(status), errors[0] if errors else "-", ms(reported),
            "still running" if orphan else "gone (hung up with the pty)"]


def main() -> int:
    verdict = Verdict("faults: RLIMIT_NPROC and RLIMIT_NOFILE reached mid-run; the daemon killed mid-session")
    process_limit(verdict)
    descriptor_limit(verdict)
    rows = [killed_plain(verdict), killed_interactive(verdict)]
    print(table(["daemon killed (SIGKILL) during", "status", "client's stderr", "after the kill", "the program"], rows))
    return verdict.finish()


if __name__ == "__main__":
    sys.exit(main())
