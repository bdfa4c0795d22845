"""The daemon's handshake state, fed anything a client could send over a real socket.

read_request runs over a real UnixChannel on a socketpair, with real
descriptors passed as SCM_RIGHTS, the client's bytes sent whole or one byte
at a time. Whatever arrives, the outcome is a request, None (the client
left) or Refused/ProtocolError — the verdict that the rules in
fuzz/fuzz_properties.py predict — and no descriptor stays open behind it.
"""

from __future__ import annotations

import array
import os
import socket
import struct
import sys
import tracemalloc
from pathlib import Path

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capsudo.core import daemon_protocol, read_request
from capsudo.proto import Refused
from capsudo.core._limits import SessionLimits
from capsudo.proto import (MAX_CONTROL_PAYLOAD, Arg, End, Env, Fd, MessageType, ProtocolError,
                           encode_message)
from capsudo.transport import UnixChannel

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "fuzz"))
sys.path.insert(0, str(REPO / "tests" / "proto"))

from fuzz_properties import HANDSHAKE_LIMITS, arrivals_from_bytes, check_handshake, handshake_verdict  # noqa: E402
from proto_strategies import (args, envs, errors, exits, fds, secrets_, session_types,  # noqa: E402
                              unauthorizeds, winsizes)

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NULL_DEVICE = os.stat(os.devnull).st_rdev

handshake_messages = st.one_of(
    st.just(Fd(3)), st.just(End()), args, envs, session_types, winsizes, secrets_, fds,
    exits, errors, unauthorizeds,
)


@st.composite
def arrivals(draw):
    """Messages, each with how many descriptors the client sends along:
    usually what an Fd announces, sometimes not, now and then a stray one."""
    parts = []
    for message in draw(st.lists(handshake_messages, max_size=14)):
        if isinstance(message, Fd):
            honest = message.count <= 4 and draw(st.integers(0, 3)) > 0
            attached = message.count if honest else draw(st.integers(0, 4))
        else:
            attached = draw(st.sampled_from([0, 0, 0, 0, 1]))
        parts.append((message, attached))
    return parts


# Valid messages and junk, run together: the bytes of a confused or hostile client.
raw_streams = st.lists(
    st.one_of(handshake_messages.map(encode_message), st.binary(min_size=1, max_size=12)), max_size=10
).map(b"".join)


def _open_descriptors() -> set[int]:
    return {fd for fd in map(int, os.listdir("/proc/self/fd")) if _is_open(fd)}


def _is_open(fd: int) -> bool:
    # The listing includes the descriptor listdir itself used, closed by now.
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


async def _handshake_over_socket(parts: list[tuple[bytes, int]], bytewise: bool, limits: SessionLimits):
    """(verdict, argv, env_entries) of read_request over a real socketpair.

    Checks on the way that the request holds three descriptors of the null
    device (the ones sent), and that nothing is left open afterwards.
    """
    daemon_end, client_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    before = _open_descriptors() - {daemon_end.fileno(), client_end.fileno()}
    channel = UnixChannel(daemon_end)
    client = trio.socket.from_stdlib_socket(client_end)

    async def send_everything():
        for data, attached in parts:
            # Open both ways, as a stdin and the stdout and stderr must be.
            descriptors = [os.open(os.devnull, os.O_RDWR) for _ in range(attached)]
            try:
                pieces = [data[i : i + 1] for i in range(len(data))] if bytewise else [data]
                for number, piece in enumerate(pieces):
                    ancillary = (
                        [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", descriptors))]
                        if descriptors and number == 0 else []
                    )
                    try:
                        await client.sendmsg([piece], ancillary)
                    except (BrokenPipeError, ConnectionResetError):
                        return  # the daemon's end closed after its verdict
                    if bytewise:
                        await trio.sleep(0)
            finally:
                for fd in descriptors:
                    os.close(fd)
        client.shutdown(socket.SHUT_WR)

    argv = env_entries = None
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_everything)
            try:
                request = await read_request(channel, daemon_protocol(limits))
            except (Refused, ProtocolError):
                verdict = "refused"
            else:
                verdict = "left" if request is None else "request"
                if request is not None:
                    assert len(request.fds) == 3
                    assert all(os.fstat(fd).st_rdev == NULL_DEVICE for fd in request.fds)
                    argv, env_entries = request.argv, request.env_entries
                    request.close_fds()
            # As the daemon does after its verdict: a client still sending
            # (one byte at a time fills the socket's queue quickly) must not
            # wait for a reader that is gone.
            await channel.aclose()
    finally:
        await channel.aclose()
        client.close()
    # Descriptors still queued in the socket went with it; any the handshake
    # took and dropped must have been closed.
    assert _open_descriptors() == before, "the handshake left a descriptor open"
    return verdict, argv, env_entries


def _until_end(parts):
    found = []
    for message, _ in parts:
        if isinstance(message, End):
            break
        found.append(message)
    return found


@SETTINGS
@given(arrivals(), st.booleans())
def test_handshake_verdict_follows_the_rules(parts, bytewise):
    encoded = [(encode_message(message), attached) for message, attached in parts]
    verdict, argv, env_entries = trio.run(_handshake_over_socket, encoded, bytewise, HANDSHAKE_LIMITS)
    assert verdict == handshake_verdict(parts, HANDSHAKE_LIMITS)
    if verdict == "request":
        before_end = _until_end(parts)
        assert argv == [m.value for m in before_end if isinstance(m, Arg)]
        assert env_entries == [m.entry for m in before_end if isinstance(m, Env)]


@SETTINGS
@given(raw_streams)
def test_any_bytes_end_the_handshake_cleanly_whole_or_byte_by_byte(data):
    whole = trio.run(_handshake_over_socket, [(data, 0)], False, HANDSHAKE_LIMITS)
    bytewise = trio.run(_handshake_over_socket, [(data, 0)], True, HANDSHAKE_LIMITS)
    assert whole == bytewise
    # Without descriptors a client can leave or be refused, never be served.
    assert whole[0] == handshake_verdict(arrivals_from_bytes(data, lambda count: 0), HANDSHAKE_LIMITS)


@SETTINGS
@given(raw_streams)
def test_scripted_channel_agrees_with_the_rules(data):
    """The in-memory form the fuzz target uses, on the same inputs."""
    check_handshake(data)


@settings(max_examples=20, deadline=None)
@given(
    st.sampled_from([MessageType.ARG, MessageType.ENV, MessageType.SECRET]),
    st.integers(1024 * 1024, MAX_CONTROL_PAYLOAD),
)
def test_an_announced_length_costs_nothing_until_the_bytes_come(type_code, announced):
    """A header announcing megabytes, then a trickle: memory follows what was sent."""
    sent = 4096

    async def scenario():
        daemon_end, client_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with daemon_end, client_end:
            channel = UnixChannel(daemon_end)
            client_end.sendall(struct.pack("<II", type_code, announced))

            async def trickle():
                for _ in range(sent // 256):
                    client_end.sendall(b"a" * 256)
                    await trio.sleep(0)
                client_end.shutdown(socket.SHUT_WR)

            tracemalloc.start()
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(trickle)
                    # A budget as large as the contract's cap, so the length itself passes.
                    with pytest.raises(ProtocolError, match="middle of a message"):
                        await read_request(channel, daemon_protocol(SessionLimits(max_bytes=MAX_CONTROL_PAYLOAD)))
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
        # The socket layer's buffers and trio's bookkeeping, nowhere near the
        # megabytes announced.
        assert peak < 512 * 1024, f"peak {peak} bytes for {sent} sent, {announced} announced"

    trio.run(scenario)


@pytest.mark.parametrize("announced", [MAX_CONTROL_PAYLOAD + 1, 2**32 - 1])
def test_a_length_past_the_limit_is_refused_at_the_header(announced):
    async def scenario():
        daemon_end, client_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with daemon_end, client_end:
            channel = UnixChannel(daemon_end)
            # Only the header: the verdict may not wait for a payload.
            client_end.sendall(struct.pack("<II", MessageType.ARG, announced))
            with trio.fail_after(5):
                with pytest.raises(ProtocolError, match="more than the limit"):
                    await read_request(channel, daemon_protocol(SessionLimits()))

    trio.run(scenario)



def test_kept_fuzz_corpus_replays_clean():
    """Every handshake the fuzzer kept still meets the handshake's properties."""
    inputs = sorted((REPO / "fuzz" / "corpus" / "handshake").iterdir())
    assert inputs, "fuzz/corpus/handshake is empty"
    for path in inputs:
        check_handshake(path.read_bytes())
