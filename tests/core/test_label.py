"""The caller's security label as the program's exec context (SO_PEERSEC parity with capsudo-rs).

These machines have no security module: peers come without a label, and a
session starts as it always has. What can be checked here is the rule
around the label: nothing is written without one, a label that cannot be
applied refuses the start instead of running the program unconfined, and
the exec attribute is cleared again right after the spawn. That the kernel
then runs the program in that context needs SELinux or AppArmor, which no
machine of this project has (see docs/threat-model.md).
"""

from __future__ import annotations

import os

import pytest
import trio

from capsudo.core import _label
from capsudo.core._spawn import SpawnError, open_plain_program
from capsudo.transport import peer_credentials


def test_without_a_security_module_a_peer_has_no_label_and_sessions_start_as_before(tmp_path):
    import socket

    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        assert peer_credentials(a).label is None

    async def start():
        with open(os.devnull, "rb") as nothing, open(tmp_path / "out", "wb") as out:
            async with open_plain_program("/bin/echo", ["echo", "ran"], {}, [nothing.fileno(), out.fileno(), out.fileno()],
                                          label=None) as program:
                return await program.wait()

    assert trio.run(start) == 0
    assert (tmp_path / "out").read_bytes() == b"ran\n"


@pytest.mark.skipif(os.path.isdir(_label.SELINUX_FS) or os.path.exists(_label.APPARMOR_EXEC_ATTRIBUTE),
                    reason="this machine has a security module that could apply the label")
def test_a_label_that_cannot_be_applied_refuses_the_start_rather_than_run_unconfined(tmp_path):
    async def start():
        with open(os.devnull, "rb") as nothing:
            async with open_plain_program("/bin/true", ["true"], {}, [nothing.fileno()] * 3,
                                          label="system_u:system_r:confined_t:s0"):
                pass

    with pytest.raises(SpawnError, match="security label 'system_u:system_r:confined_t:s0' cannot be applied here"):
        trio.run(start)


def test_the_exec_attribute_is_written_for_the_spawn_and_cleared_after(monkeypatch):
    # What would go to /proc/thread-self/attr/exec under SELinux, recorded instead.
    writes = []
    monkeypatch.setattr(_label, "exec_request", lambda label: ("/proc/thread-self/attr/exec", label))
    monkeypatch.setattr(_label, "_write", lambda attribute, value: writes.append(value))
    with _label.exec_label("user_u:user_r:user_t:s0"):
        writes.append("spawn")
    assert writes == [b"user_u:user_r:user_t:s0", "spawn", b""]


def test_a_refused_attribute_refuses_the_start(monkeypatch):
    def refuse(attribute, value):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(_label, "exec_request", lambda label: ("/proc/thread-self/attr/exec", label))
    monkeypatch.setattr(_label, "_write", refuse)
    with pytest.raises(OSError, match="cannot run under the caller's security label 'x_t': Permission denied"):
        with _label.exec_label("x_t"):
            raise AssertionError("the block must not run")


def test_an_unconfined_apparmor_peer_changes_nothing(monkeypatch):
    monkeypatch.setattr(os.path, "exists", lambda path: path == _label.APPARMOR_EXEC_ATTRIBUTE)
    assert _label.exec_request("unconfined") is None
    assert _label.exec_request("/usr/bin/agent (enforce)") == (_label.APPARMOR_EXEC_ATTRIBUTE, "exec /usr/bin/agent")
