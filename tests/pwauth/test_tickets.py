"""Tickets without a clock, and a peer's terminal read from /proc for real peers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from capsudo.pwauth._tickets import Terminal, Tickets, peer_pidfd_supported, terminal_of

ALICE_ON_PTS_3 = Terminal(uid=1000, tty=os.makedev(136, 3), session=4242, leader_start=99)


def test_a_ticket_lasts_its_duration_from_the_issue_and_use_does_not_renew_it():
    tickets = Tickets(5.0)
    tickets.issue(ALICE_ON_PTS_3, now=100.0)
    assert tickets.left(ALICE_ON_PTS_3, now=103.0) == 2.0
    assert tickets.left(ALICE_ON_PTS_3, now=104.9) > 0
    assert tickets.left(ALICE_ON_PTS_3, now=105.0) == 0.0
    assert len(tickets) == 0


@pytest.mark.parametrize("other", [
    Terminal(1001, ALICE_ON_PTS_3.tty, 4242, 99),           # another uid
    Terminal(1000, os.makedev(136, 4), 4242, 99),           # another terminal
    Terminal(1000, ALICE_ON_PTS_3.tty, 4243, 99),           # another session
    Terminal(1000, ALICE_ON_PTS_3.tty, 4242, 100),          # a new session that reused the leader's pid
])
def test_a_ticket_is_for_its_terminal_session_only(other):
    tickets = Tickets(5.0)
    tickets.issue(ALICE_ON_PTS_3, now=0.0)
    assert tickets.left(other, now=1.0) == 0.0


PEER = "import socket, sys; s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); print('on', flush=True); s.recv(1)"


@pytest.mark.skipif(not peer_pidfd_supported(), reason="needs SO_PEERPIDFD (Linux 6.5)")
def test_a_peer_on_a_pty_has_its_terminal_and_one_without_has_none(tmp_path):
    path = str(tmp_path / "s")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen()
    controller, pty = os.openpty()

    def peer(**how):
        process = subprocess.Popen([*how.pop("prefix", []), sys.executable, "-c", PEER, path],
                                   stdout=subprocess.PIPE, text=True, **how)
        assert process.stdout.readline() == "on\n"
        conn, _ = listener.accept()
        return process, conn

    try:
        with_tty, conn = peer(prefix=["setsid", "-c"], stdin=pty)
        terminal = terminal_of(conn, with_tty.pid, os.getuid())
        assert terminal is not None
        assert terminal.tty == os.fstat(pty).st_rdev
        assert terminal.session == with_tty.pid  # setsid made it the leader (it execs, same pid)
        conn.close()
        with_tty.wait()

        alone, conn = peer(stdin=subprocess.DEVNULL, start_new_session=True)
        assert terminal_of(conn, alone.pid, os.getuid()) is None
        conn.close()
        alone.wait()
    finally:
        os.close(controller)
        os.close(pty)
        listener.close()
