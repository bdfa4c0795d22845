"""Endpoint addresses: one syntax, and what listening on and connecting to each gives."""

from __future__ import annotations

import os
import socket

import pytest
import trio

from capsudo.proto import Arg, End, Exit, Fd
from capsudo.transport import (
    EndpointError,
    MuxChannel,
    NetworkListener,
    SshEndpoint,
    TcpEndpoint,
    TlsEndpoint,
    TlsOptions,
    UnixChannel,
    UnixEndpoint,
    VsockEndpoint,
    connect_endpoint,
    exposure_warning,
    open_listener,
    parse_endpoint,
)

GOOD = [
    ("/run/capsudo/default", UnixEndpoint("/run/capsudo/default")),
    ("relative/socket", UnixEndpoint("relative/socket")),
    ("./a:b", UnixEndpoint("./a:b")),
    ("unix:///run/capsudo/default", UnixEndpoint("/run/capsudo/default")),
    ("UNIX:///tmp/x", UnixEndpoint("/tmp/x")),
    ("tcp://127.0.0.1:4711", TcpEndpoint("127.0.0.1", 4711)),
    ("tcp://example.org:1", TcpEndpoint("example.org", 1)),
    ("tcp://[::1]:65535", TcpEndpoint("::1", 65535)),
    ("tcp://0.0.0.0:0", TcpEndpoint("0.0.0.0", 0)),
    ("tls://host.example:443", TlsEndpoint("host.example", 443)),
    ("tls://[fe80::1]:8443", TlsEndpoint("fe80::1", 8443)),
    ("vsock://2:5000", VsockEndpoint(2, 5000)),
    ("vsock://any:5000", VsockEndpoint(0xFFFFFFFF, 5000)),
    ("vsock://4294967295:4294967295", VsockEndpoint(0xFFFFFFFF, 0xFFFFFFFF)),
    ("ssh://host/run/capsudo/default", SshEndpoint("host", "/run/capsudo/default")),
    ("ssh://alice@host:2222/run/capsudo/root", SshEndpoint("host", "/run/capsudo/root", "alice", 2222)),
    ("ssh://bob@[::1]/s", SshEndpoint("::1", "/s", "bob")),
]

BAD = [
    ("", "empty"),
    ("tcp:127.0.0.1:80", "tcp://"),
    ("unix:/run/x", "unix://"),
    ("unix://relative", "absolute path"),
    ("tcp://127.0.0.1", "missing port"),
    ("tcp://:80", "missing host"),
    ("tcp://127.0.0.1:", "not a number"),
    ("tcp://127.0.0.1:http", "not a number"),
    ("tcp://127.0.0.1:65536", "above 65535"),
    ("tcp://::1:80", "brackets"),
    ("tcp://[::1:80", "unclosed"),
    ("tcp://[::g]:80", "not an IPv6 address"),
    ("tcp://[::1]80", "unexpected"),
    ("tcp://host:80/path", "no path"),
    ("tcp://user@host:80", "no user name"),
    ("tcp://ho st:80", "not a host name"),
    ("tls://host", "missing port"),
    ("vsock://2", "vsock://CID:PORT"),
    ("vsock://x:5", "context id"),
    ("vsock://4294967296:5", "context id"),
    ("vsock://2:4294967296", "above"),
    ("ssh://host", "remote socket's path"),
    ("ssh://host/", "remote socket's path"),
    ("ssh://@host/x", "not a user name"),
    ("ssh://host:0/x", "port 0"),
    ("http://host:80", "unknown scheme"),
    ("tcp://a\nb:1", "control characters"),
]


@pytest.mark.parametrize(("text", "expected"), GOOD)
def test_good_endpoints_parse(text, expected):
    assert parse_endpoint(text) == expected


@pytest.mark.parametrize(("text", "fragment"), BAD)
def test_bad_endpoints_are_refused_with_one_line(text, fragment):
    with pytest.raises(ValueError) as excinfo:
        parse_endpoint(text)
    message = str(excinfo.value)
    assert fragment in message
    assert "\n" not in message


@pytest.mark.parametrize("text", [t for t, _ in GOOD if "://" in t and not t.startswith("UNIX")])
def test_endpoints_print_as_they_parse(text):
    endpoint = parse_endpoint(text)
    assert parse_endpoint(str(endpoint)) == endpoint


def test_tls_options_from_the_environment():
    assert TlsOptions.from_environment({}) is None
    full = {"CAPSUDO_TLS_CERT": "c.pem", "CAPSUDO_TLS_KEY": "k.pem", "CAPSUDO_TLS_CA": "ca.pem"}
    assert TlsOptions.from_environment(full) == TlsOptions("c.pem", "k.pem", "ca.pem")
    assert TlsOptions.from_environment({"CAPSUDO_TLS_CA": "ca.pem"}) == TlsOptions(None, None, "ca.pem")
    with pytest.raises(ValueError, match="CAPSUDO_TLS_CA"):
        TlsOptions.from_environment({"CAPSUDO_TLS_CERT": "c.pem", "CAPSUDO_TLS_KEY": "k.pem"})
    with pytest.raises(ValueError, match="CAPSUDO_TLS_KEY"):
        TlsOptions.from_environment({"CAPSUDO_TLS_CERT": "c.pem", "CAPSUDO_TLS_CA": "ca.pem"})


def test_exposure_warnings():
    assert "anyone who can reach this port" in exposure_warning("tcp://0.0.0.0:4711")
    assert "anyone who can reach this port" in exposure_warning("tcp://192.0.2.7:4711")
    assert "every local user" in exposure_warning("tcp://127.0.0.1:4711")
    assert "every local user" in exposure_warning("tcp://[::1]:4711")
    assert exposure_warning("tls://0.0.0.0:4711") is None
    assert exposure_warning("/run/capsudo/default") is None
    assert exposure_warning("vsock://any:5000") is None


async def test_a_session_over_real_tcp(tmp_path):
    async with await open_listener("tcp://127.0.0.1:0") as listener:
        assert isinstance(listener, NetworkListener)
        assert "every local user" in listener.warning
        assert not listener.exposed_to_network
        stdin_r, stdin_w = os.pipe()
        stdout_r, stdout_w = os.pipe()
        try:
            os.write(stdin_w, b"over tcp")
            os.close(stdin_w)

            async def daemon() -> None:
                channel = await listener.accept()
                async with channel:
                    assert isinstance(channel, MuxChannel)
                    assert channel.description.startswith("tcp 127.0.0.1:")
                    received = await channel.receive()
                    assert (await channel.receive()).message == End()
                    stdin, stdout, stderr = (socket.socket(fileno=fd) for fd in received.fds)
                    data = await trio.to_thread.run_sync(stdin.recv, 100)
                    stdout.sendall(data.upper())
                    for sock in (stdin, stdout, stderr):
                        sock.close()
                    await channel.send(Exit(0))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(daemon)
                async with await connect_endpoint(f"tcp://127.0.0.1:{listener.port}") as client:
                    await client.send(Fd(3), [stdin_r, stdout_w, stdout_w])
                    await client.send(End())
                    with trio.fail_after(10):
                        assert (await client.receive()).message == Exit(0)
                    assert os.read(stdout_r, 100) == b"OVER TCP"
        finally:
            for fd in (stdin_r, stdout_r, stdout_w):
                os.close(fd)


async def test_listening_on_all_addresses_is_reported_as_network_exposure():
    async with await open_listener("tcp://0.0.0.0:0") as listener:
        assert listener.exposed_to_network
        assert "anyone who can reach this port holds the capability" in listener.warning


async def test_a_unix_endpoint_gives_real_descriptors(tmp_path):
    path = str(tmp_path / "socket")
    async with await open_listener(f"unix://{path}") as listener:
        async with trio.open_nursery() as nursery:

            async def daemon() -> None:
                async with await listener.accept() as channel:
                    assert isinstance(channel, UnixChannel)
                    assert (await channel.receive()).message == Arg("hello")

            nursery.start_soon(daemon)
            async with await connect_endpoint(path) as client:
                assert isinstance(client, UnixChannel)
                await client.send(Arg("hello"))


async def test_connection_failures_are_one_line_endpoint_errors(tmp_path):
    async with await open_listener("tcp://127.0.0.1:0") as listener:
        port = listener.port
    for text, fragment in [
        (f"tcp://127.0.0.1:{port}", "refused"),
        ("tcp://127.0.0.1:0", "only for listening"),
        (str(tmp_path / "nothing-here"), "no endpoint at"),
        ("tls://127.0.0.1:1", "TLS needs a CA"),
    ]:
        with pytest.raises(EndpointError) as excinfo:
            await connect_endpoint(text)
        assert fragment in str(excinfo.value)
        assert "\n" not in str(excinfo.value)


async def test_listen_failures_are_one_line_endpoint_errors():
    async with await open_listener("tcp://127.0.0.1:0") as listener:
        with pytest.raises(EndpointError, match="in use"):
            await open_listener(f"tcp://127.0.0.1:{listener.port}")
    with pytest.raises(EndpointError, match="certificate"):
        await open_listener("tls://127.0.0.1:0")
    with pytest.raises(EndpointError, match="only be connected to"):
        await open_listener("ssh://host/x")


async def test_vsock_errors_are_clear_here():
    # This machine has no vsock loopback: whatever the reason, one clear line.
    with trio.fail_after(15):
        with pytest.raises(EndpointError) as excinfo:
            await connect_endpoint("vsock://2:1")
    assert str(excinfo.value).startswith("cannot connect to vsock://2:1: ")
    assert "\n" not in str(excinfo.value)
    with pytest.raises(EndpointError) as excinfo:
        await open_listener("vsock://1:4711")
    assert str(excinfo.value).startswith("cannot listen on vsock://1:4711: ")
    assert "\n" not in str(excinfo.value)
