"""The library from programs: the async call inside trio over every kind of endpoint, the
synchronous call from many threads at once, and a cancelled session hanging its program up."""

from __future__ import annotations

import os
import threading
import time

import pytest
import trio

from capsudo import core

from .test_channel_sessions import certificates  # noqa: F401  (a fixture)


@pytest.fixture(params=["unix", "tcp", "tls"])
def endpoint(request, daemon_factory, network_daemon_factory, certificates):  # noqa: F811
    """(address, tls options) of a daemon with no pinned program."""
    if request.param == "unix":
        return daemon_factory().socket, None
    if request.param == "tcp":
        return network_daemon_factory("tcp://127.0.0.1:0").socket, None
    daemon = network_daemon_factory("tls://127.0.0.1:0", "--tls-cert", certificates["daemon"], "--tls-key",
                                    certificates["daemon"], "--tls-client-ca", certificates["ca"])
    return daemon.socket, core.TlsOptions(certificates["client"], certificates["client"], certificates["ca"])


def test_the_async_call_runs_inside_trio_and_captures_output(endpoint):
    address, tls = endpoint

    async def main():
        return await core.run_async(["sh", "-c", "echo out; echo err >&2; exit 3"], endpoint=address, tls=tls,
                                    capture_output=True)

    result = trio.run(main)
    assert (result.status, result.stdout, result.stderr) == (3, b"out\n", b"err\n")
    assert not result.stdout_truncated


def test_output_past_the_cap_is_cut_and_flagged(daemon):
    result = core.run(["head", "-c", "100000", "/dev/zero"], endpoint=daemon.socket, capture_output=True,
                      max_output=1000)
    assert (result.status, len(result.stdout), result.stdout_truncated) == (0, 1000, True)


def test_input_reaches_the_program_and_check_raises_with_the_status(daemon):
    assert core.run(["cat"], endpoint=daemon.socket, input=b"typed", capture_output=True).stdout == b"typed"
    with pytest.raises(core.SessionFailed) as failed:
        core.run(["sh", "-c", "exit 4"], endpoint=daemon.socket, capture_output=True, check=True)
    assert failed.value.status == 4 and failed.value.result.status == 4


def test_a_string_argv_is_refused_rather_than_split_into_letters(daemon):
    with pytest.raises(TypeError, match=r"not the string 'ls -l'"):
        core.run("ls -l", endpoint=daemon.socket)  # type: ignore[arg-type]


def test_the_synchronous_call_from_16_threads_at_once(daemon):
    results: dict[int, core.CompletedSession] = {}

    def one(n: int) -> None:
        results[n] = core.run(["echo", str(n)], endpoint=daemon.socket, capture_output=True, timeout=20)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert {n: r.stdout for n, r in results.items()} == {n: f"{n}\n".encode() for n in range(16)}


def test_the_synchronous_call_inside_trio_says_to_await_the_async_one(daemon):
    async def main():
        core.run(["true"], endpoint=daemon.socket, capture_output=True)

    with pytest.raises(RuntimeError, match="run_async"):
        trio.run(main)


def _gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.02)
    return False


def test_cancelling_a_running_session_hangs_its_program_up(daemon, tmp_path):
    pid_file = tmp_path / "pid"
    script = f"echo $$ > {pid_file}; exec sleep 60"

    async def main():
        with trio.move_on_after(0.5) as scope:
            await core.run_async(["sh", "-c", script], endpoint=daemon.socket, capture_output=True)
        return scope.cancelled_caught

    assert trio.run(main)
    assert _gone(int(pid_file.read_text()), within=5)


def test_a_timeout_of_the_synchronous_call_hangs_the_program_up(daemon, tmp_path):
    pid_file = tmp_path / "pid"
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="hung up"):
        core.run(["sh", "-c", f"echo $$ > {pid_file}; exec sleep 60"], endpoint=daemon.socket, timeout=0.5)
    assert time.monotonic() - started < 5
    assert _gone(int(pid_file.read_text()), within=5)


@pytest.mark.parametrize("kind", ["unix", "tcp"])
def test_an_endpoint_nobody_serves_raises_client_error_itself(sock_dir, kind):
    # What the docstring promises, and what a caller's `except ClientError` catches:
    # the error itself, not a group the session's nursery wrapped it in.
    address = os.path.join(sock_dir, "nobody.sock") if kind == "unix" else "tcp://127.0.0.1:1"

    async def main():
        await core.run_async(["true"], endpoint=address, capture_output=True)

    with pytest.raises(core.ClientError) as raised:
        trio.run(main)
    assert "nobody.sock" in str(raised.value) or "127.0.0.1:1" in str(raised.value)
    with pytest.raises(core.ClientError):
        core.run(["true"], endpoint=address, capture_output=True)
