"""The session protocol's table, driven directly: what each side may send, and when."""

from __future__ import annotations

import pytest

from capsudo.proto import (CLIENT, DAEMON, Arg, Challenged, Configured, End, Env, Error, Exit, Failed, Fd,
                           Finished, HandshakeLimits, ProtocolError, Refused, Resized, Secret, SessionKind,
                           SessionProtocol, SessionType, Unauthorized, Winsize, encode_message, handshake, lean,
                           reason, reason_of)
from capsudo.proto._session import CHALLENGED, CONFIGURING, FINISHED, RUNNING


def daemon_side(**limits) -> SessionProtocol:
    return SessionProtocol(DAEMON, HandshakeLimits(**limits))


def test_a_whole_configuration_becomes_one_request():
    protocol = daemon_side()
    events = [protocol.receive(m) for m in (
        Secret(b"pw"), Env("LANG=C"), Arg("id"), Arg("-u"), SessionType(SessionKind.INTERACTIVE),
        Winsize(24, 80), Fd(3),
    )]
    assert events == [None] * 7
    configured = protocol.receive(End())
    assert isinstance(configured, Configured)
    request = configured.request
    assert (request.argv, request.env_entries, request.interactive, request.winsize, request.secret) == (
        ["id", "-u"], ["LANG=C"], True, Winsize(24, 80), b"pw")
    assert protocol.phase == RUNNING


def test_after_End_only_window_sizes_mean_something():
    protocol = daemon_side()
    for message in (Fd(3), End()):
        protocol.receive(message)
    resized = protocol.receive(Winsize(50, 132))
    assert isinstance(resized, Resized) and resized.winsize == Winsize(50, 132)
    assert protocol.receive(Arg("late")) is None  # ignored, as before: the program already runs
    assert protocol.phase == RUNNING


@pytest.mark.parametrize("messages, code", [
    ([Fd(3), Fd(3)], "descriptors-twice"),
    ([Fd(2)], "descriptor-count"),
    ([End()], "no-descriptors"),
])
def test_descriptor_rules_refuse_with_their_reason(messages, code):
    protocol = daemon_side()
    with pytest.raises(Refused) as refused:
        for message in messages:
            protocol.receive(message)
    assert refused.value.reason.code == code


def test_limits_are_constructor_arguments():
    with pytest.raises(Refused) as refused:
        protocol = daemon_side(max_items=2)
        for value in ("a", "b", "c"):
            protocol.receive(Arg(value))
    assert refused.value.reason == reason("too-many-items", limit=2)
    with pytest.raises(Refused) as refused:
        daemon_side(max_bytes=3).receive(Arg("four"))
    assert refused.value.reason.code == "too-large"
    with pytest.raises(Refused) as refused:
        protocol = daemon_side(max_messages=2)
        for _ in range(3):
            protocol.receive(Winsize(1, 1))
    assert refused.value.reason.code == "too-many-messages"


def test_a_client_may_not_send_what_only_a_daemon_sends():
    for message in (Exit(0), Error("x"), Unauthorized("p")):
        with pytest.raises(ProtocolError, match=f"a client may not send {type(message).__name__}"):
            daemon_side().receive(message)


def test_the_client_side_reads_payloads_as_the_blocking_client_gets_them():
    protocol = SessionProtocol(CLIENT)
    failed = protocol.receive(type_code=lean.ERROR, payload=b"unable to run x: \xff")
    assert isinstance(failed, Failed) and failed.text == "unable to run x: \ufffd"
    finished = protocol.receive(type_code=lean.EXIT, payload=lean.exit_payload(127))
    assert isinstance(finished, Finished) and finished.status == 127
    assert protocol.phase == FINISHED
    assert protocol.receive(Error("after the end")) is None


def test_a_challenge_ends_the_conversation():
    protocol = SessionProtocol(CLIENT)
    challenged = protocol.receive(Unauthorized("[capsudo] me@host's password: "))
    assert isinstance(challenged, Challenged) and challenged.prompt.startswith("[capsudo]")
    assert protocol.phase == CHALLENGED


def test_our_own_order_is_checked_too():
    protocol = SessionProtocol(CLIENT)
    for type_code in (lean.ARG, lean.FD, lean.END, lean.WINSIZE):
        protocol.send(type_code)
    with pytest.raises(ProtocolError, match="may not send Arg while running"):
        protocol.send(lean.ARG)
    daemon = daemon_side()
    with pytest.raises(ProtocolError):
        daemon.send(lean.ARG)


class _Request:
    argv = ["ls", "-l"]
    env_entries = ["TERM=xterm"]
    interactive = True
    winsize = (24, 80, 0, 0)


def test_the_handshake_is_sent_in_the_order_of_the_contract():
    wire = b"".join(lean.message(code, payload) for code, payload in handshake(_Request(), b"pw"))
    assert wire == b"".join(encode_message(m) for m in (
        Secret(b"pw"), Env("TERM=xterm"), Arg("ls"), Arg("-l"), SessionType(SessionKind.INTERACTIVE),
        Winsize(24, 80), Fd(3), End()))


def test_a_refusal_with_one_wording_is_recognised_by_its_text():
    assert reason_of("secret invalid").code == "secret-invalid"
    assert reason_of("secret invalid!") is None
    assert reason("busy", limit=4).text == "too many sessions (limit 4); try again later"


def test_describe_is_alone_on_its_connection_or_after_a_secret():
    from capsudo.proto import (DAEMON, DESCRIBING, Arg, Describe, DescribeAsked, DescribingProtocol, Refused,
                               Secret, SessionProtocol)

    alone = DescribingProtocol(DAEMON)
    assert isinstance(alone.receive(Describe()), DescribeAsked) and alone.phase == DESCRIBING
    with pytest.raises(ProtocolError):
        alone.receive(Describe())  # nothing may follow it
    after_secret = DescribingProtocol(DAEMON)
    after_secret.receive(Secret(b"pw"))
    assert isinstance(after_secret.receive(Describe()), DescribeAsked)
    after_arg = DescribingProtocol(DAEMON)
    after_arg.receive(Arg("ls"))
    with pytest.raises(Refused, match="alone on its connection"):
        after_arg.receive(Describe())
    # The reference table, which the proxy follows, knows no Describe.
    with pytest.raises(ProtocolError, match="may not send Describe"):
        SessionProtocol(DAEMON).receive(Describe())


def test_a_client_reads_the_description_or_a_refusal():
    from capsudo.proto import Described, DescribingProtocol, lean

    protocol = DescribingProtocol(CLIENT)
    protocol.send(lean.DESCRIBE)
    event = protocol.receive(type_code=lean.DESCRIPTION, payload=b'{"name": "n"}')
    assert isinstance(event, Described) and event.fields == {"name": "n"}
    refused = DescribingProtocol(CLIENT)
    refused.send(lean.DESCRIBE)
    assert isinstance(refused.receive(type_code=lean.ERROR, payload=b"unknown message type 32"), Failed)
    assert isinstance(refused.receive(type_code=lean.EXIT, payload=lean.exit_payload(1)), Finished)
    broken = DescribingProtocol(CLIENT)
    broken.send(lean.DESCRIBE)
    with pytest.raises(ProtocolError, match="not a JSON object"):
        broken.receive(type_code=lean.DESCRIPTION, payload=b"[1]")
