"""The caller's security label becomes the program's, where the kernel has a security module.

A peer on a Unix socket comes with a label (SO_PEERSEC) on a system whose
security module labels processes: an SELinux context, an AppArmor profile.
The program a session runs is then executed in that very context, so a
confined caller stays confined behind the daemon, as capsudo-rs does. The
context is set on the daemon's own thread for the one exec that follows
(/proc/thread-self/attr/exec, which the child inherits and the kernel
clears at exec), around the spawn and nothing else.

Without a module there is no label and nothing happens. A label this
daemon cannot apply refuses the session: running a confined caller's
program unconfined is exactly what the label is there to prevent.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager



class LabelError(OSError):
    """The program cannot be run under the caller's label; a spawn failure like any other."""

EXEC_ATTRIBUTE = "/proc/thread-self/attr/exec"
APPARMOR_EXEC_ATTRIBUTE = "/proc/thread-self/attr/apparmor/exec"
SELINUX_FS = "/sys/fs/selinux"


def exec_request(label: str) -> tuple[str, str] | None:
    """(attribute file, what to write) to run the next exec under `label`; None when nothing is to change.

    AppArmor names a peer as `profile (mode)`; an unconfined peer needs
    nothing. SELinux names it by its context, written as it is.
    """
    if os.path.exists(APPARMOR_EXEC_ATTRIBUTE):
        profile = label.rsplit(" (", 1)[0] if label.endswith(")") else label
        return None if profile == "unconfined" else (APPARMOR_EXEC_ATTRIBUTE, f"exec {profile}")
    if os.path.isdir(SELINUX_FS):
        return EXEC_ATTRIBUTE, label
    raise LabelError(f"the caller's security label {label!r} cannot be applied here: no SELinux or AppArmor")


@contextmanager
def exec_label(label: str | None) -> Iterator[None]:
    """Within the block, an exec from this thread runs under the caller's `label`.

    The block must not yield to other tasks: another session's spawn would
    inherit the label.
    """
    request = exec_request(label) if label else None
    if request is None:
        yield
        return
    attribute, value = request
    try:
        _write(attribute, value.encode())
    except OSError as exc:
        raise LabelError(f"cannot run under the caller's security label {label!r}: {exc.strerror}") from None
    try:
        yield
    finally:
        try:
            # Cleared for whatever this thread runs next; the kernel also clears it at the exec.
            _write(attribute, b"")
        except OSError:
            pass


def _write(attribute: str, value: bytes) -> None:
    fd = os.open(attribute, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value)
    finally:
        os.close(fd)
