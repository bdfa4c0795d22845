"""^Z in an interactive session: the program stops, then the client stops.

The program's pty is the daemon's. If the program led its session, its
process group would be orphaned and the kernel would discard the SIGTSTP of
a typed ^Z. So, as sudo does, a monitor process leads the session and the
program runs in a process group of its own below it, in the foreground of
the pty: that group is not orphaned, and ^Z stops it. The monitor sees the
stop (waitpid with WUNTRACED) and reports it to the daemon on a pipe; the
daemon then sends SIGTSTP to the client's process through a pidfd, which the
client takes as "restore your terminal and stop". The client's `fg` sends a
Winsize, and the daemon continues the program (see docs/protocol.md).
"""

from __future__ import annotations

import errno
import os
import signal
import socket

# The pidfd of a Unix socket's peer as it was at connect time (Linux 6.5).
SO_PEERPIDFD = 77

# Monitor → daemon, one byte each after the program's pid (4 bytes, little-endian).
STOPPED = b"S"
CONTINUED = b"C"

_HIGHEST_FD = 2**31 - 1

# A bound on the /proc walk that looks for a stopped descendant after a ^Z.
_DESCENDANTS_LOOKED_AT = 256


# --- in the child, between fork and exec ------------------------------------------


def monitor_program(report: int) -> None:
    """Run as preexec_fn after setsid() and TIOCSCTTY.

    Forks: the child returns (and execs the program) in a new process group
    that it makes the pty's foreground; the parent stays the session leader
    and never returns. It writes the program's pid, then a byte per stop and
    continue, to `report`, and exits with the program's shell-style status.
    """
    pid = os.fork()
    if pid == 0:
        os.close(report)
        os.setpgid(0, 0)
        # From a background group tcsetpgrp would stop us with SIGTTOU.
        signal.signal(signal.SIGTTOU, signal.SIG_IGN)
        os.tcsetpgrp(0, os.getpid())
        signal.signal(signal.SIGTTOU, signal.SIG_DFL)
        return
    try:
        os.setpgid(pid, pid)  # also here, so neither side races the other
    except OSError:
        pass  # it has exec'd already, after doing it itself
    _write(report, pid.to_bytes(4, "little"))
    # Nothing of the daemon's stays open here: not the terminal (the master
    # must see end-of-file when the program's side closes), not the pipe
    # that tells the daemon whether the exec succeeded.
    os.closerange(0, report)
    os.closerange(report + 1, _HIGHEST_FD)
    signal.set_wakeup_fd(-1)
    for signum in signal.valid_signals():
        try:
            if callable(signal.getsignal(signum)):
                signal.signal(signum, signal.SIG_DFL)  # the daemon's Python handlers cannot run here
        except (OSError, ValueError):
            pass
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # a daemon gone away is no reason to die before the program
    while True:
        try:
            _, status = os.waitpid(pid, os.WUNTRACED | os.WCONTINUED)
        except ChildProcessError:
            os._exit(127)
        if os.WIFSTOPPED(status):
            _write(report, STOPPED)
        elif os.WIFCONTINUED(status):
            _write(report, CONTINUED)
        else:
            break
    if os.WIFSIGNALED(status):
        os._exit(128 + os.WTERMSIG(status))
    os._exit(os.WEXITSTATUS(status))


def _write(fd: int, data: bytes) -> None:
    try:
        os.write(fd, data)
    except OSError:
        pass


# --- in the daemon ----------------------------------------------------------------------


def open_peer_pidfd(channel) -> int | None:
    """A pidfd of the process that connected `channel`, or None.

    Only a Unix socket names a process. SO_PEERPIDFD names the very process
    that connected, even if its pid has since been reused; where the kernel
    lacks it, a pidfd is opened on the pid SO_PEERCRED gave, and the uid
    check before each signal keeps a reused pid harmless.
    """
    sock = getattr(channel, "socket", None)
    peer = getattr(channel, "peer", None)
    if sock is None or peer is None or getattr(sock, "family", None) != socket.AF_UNIX:
        return None
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERPIDFD)
        return raw if raw >= 0 else None
    except OSError as exc:
        if exc.errno not in (errno.ENOPROTOOPT, errno.EINVAL):
            return None
    if peer.pid <= 0:
        return None
    try:
        return os.pidfd_open(peer.pid)
    except OSError:
        return None


def _pid_of(pidfd: int) -> int | None:
    try:
        with open(f"/proc/self/fdinfo/{pidfd}", "rb") as info:
            for line in info:
                if line.startswith(b"Pid:"):
                    pid = int(line.split()[1])
                    return pid if pid > 0 else None
    except (OSError, ValueError, IndexError):
        pass
    return None


def _uids_of(pid: int) -> tuple[int, ...]:
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"Uid:"):
                    return tuple(int(field) for field in line.split()[1:])
    except (OSError, ValueError):
        pass
    return ()


def suspend_client(pidfd: int, peer_uid: int) -> bool:
    """SIGTSTP to the client, if its process is alive and is one the peer
    could signal itself (its real or saved uid is the peer's); True if sent.

    The pidfd is checked alive before its uids are read and is the target of
    the signal: a process that exited in between makes the signal fail,
    so the uids read were those of the process signalled.
    """
    try:
        signal.pidfd_send_signal(pidfd, 0)
    except OSError:
        return False
    pid = _pid_of(pidfd)
    uids = _uids_of(pid) if pid is not None else ()
    if len(uids) < 3 or peer_uid not in (uids[0], uids[2]):
        return False
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGTSTP)
    except OSError:
        return False
    return True


def _children_of(pid: int) -> list[int]:
    children: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return children
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children", "rb") as listed:
                children.extend(int(child) for child in listed.read().split())
        except (OSError, ValueError):
            pass
    return children


def _state_and_group(pid: int) -> tuple[bytes, int] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat_file:
            line = stat_file.read()
    except OSError:
        return None
    fields = line[line.rfind(b")") + 2 :].split()  # the name in parentheses may hold anything
    try:
        return fields[0], int(fields[2])
    except (IndexError, ValueError):
        return None


def stopped_below(program_pid: int) -> bool:
    """Whether a process of the program's group, among the program and its
    descendants, is stopped.

    The monitor can wait only for the program's own process, and that one
    may never stop for a ^Z: a shell that has just vforked is uninterruptible
    until its child execs, and a child stopped before its exec never does.
    The job is stuck then all the same, and only a SIGCONT to the group
    (`fg`) gets it going again.
    """
    seen = set()
    waiting = [program_pid]
    while waiting and len(seen) < _DESCENDANTS_LOOKED_AT:
        pid = waiting.pop()
        if pid in seen:
            continue
        seen.add(pid)
        found = _state_and_group(pid)
        if found is None:
            continue
        state, group = found
        if group == program_pid and state in (b"T", b"t"):
            return True
        waiting.extend(_children_of(pid))
    return False


def client_pid(pidfd: int) -> int | None:
    """The pid the pidfd names now, None once that process has exited."""
    return _pid_of(pidfd)
