"""tls:// endpoints: mutual TLS on real TCP, with CAs made for the test."""

from __future__ import annotations

import pytest
import trio
import trustme

from capsudo.proto import Arg, End, Exit
from capsudo.transport import (
    EndpointError,
    MuxChannel,
    TlsHandshakeError,
    TlsOptions,
    connect_endpoint,
    open_listener,
)


@pytest.fixture(scope="module")
def authorities():
    return trustme.CA(), trustme.CA()


def _options(directory, name, ca, cert=None) -> TlsOptions:
    ca_path = directory / f"{name}-ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    if cert is None:
        return TlsOptions(None, None, str(ca_path))
    cert_path, key_path = directory / f"{name}-cert.pem", directory / f"{name}-key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    return TlsOptions(str(cert_path), str(key_path), str(ca_path))


@pytest.fixture
def identities(tmp_path, authorities):
    ca, other = authorities
    return {
        "server": _options(tmp_path, "server", ca, ca.issue_cert("127.0.0.1", "localhost")),
        "client": _options(tmp_path, "client", ca, ca.issue_cert("alice@example.org")),
        "no certificate": _options(tmp_path, "bare", ca),
        "foreign certificate": _options(tmp_path, "foreign", ca, other.issue_cert("mallory@example.org")),
        "foreign server CA": _options(tmp_path, "trusting-other", other, ca.issue_cert("bob@example.org")),
    }


async def _good_session(listener, endpoint, options) -> None:
    async def daemon() -> None:
        async with await listener.accept() as channel:
            assert isinstance(channel, MuxChannel)
            assert "alice@example.org" in channel.description
            assert (await channel.receive()).message == Arg("id")
            assert (await channel.receive()).message == End()
            await channel.send(Exit(0))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(daemon)
        async with await connect_endpoint(endpoint, tls=options) as client:
            await client.send(Arg("id"))
            await client.send(End())
            with trio.fail_after(10):
                assert (await client.receive()).message == Exit(0)


async def _refused_client(endpoint, options) -> str:
    """Act as the capsudo client does; return the one error it meets."""
    try:
        client = await connect_endpoint(endpoint, tls=options)
    except TlsHandshakeError as exc:
        return str(exc)
    async with client:
        with trio.fail_after(10):
            try:
                await client.send(Arg("id"))
                await client.send(End())
                outcome = await client.receive()
            except trio.BrokenResourceError as exc:
                return str(exc)
    raise AssertionError(f"the refused client got {outcome}")


async def test_mutual_tls_works(identities):
    async with await open_listener("tls://127.0.0.1:0", tls=identities["server"]) as listener:
        assert listener.warning is None
        await _good_session(listener, f"tls://127.0.0.1:{listener.port}", identities["client"])


@pytest.mark.parametrize(
    ("who", "client_says", "server_says"),
    [
        ("no certificate", "certificate required", "presented no certificate"),
        ("foreign certificate", "unknown CA", "not signed by the accepted CA"),
        ("foreign server CA", "server's certificate is not trusted", "unknown CA"),
    ],
)
async def test_refused_clients_get_clear_errors_and_the_listener_carries_on(identities, who, client_says, server_says):
    server_errors: list[TlsHandshakeError] = []
    async with await open_listener(
        "tls://127.0.0.1:0", tls=identities["server"], on_handshake_error=server_errors.append
    ) as listener:
        endpoint = f"tls://127.0.0.1:{listener.port}"
        accepted: list[MuxChannel] = []

        async def accept_loop() -> None:
            # An accept loop as a daemon runs it: the refused client never reaches it.
            while True:
                accepted.append(await listener.accept())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(accept_loop)
            with trio.fail_after(10):
                client_message = await _refused_client(endpoint, identities[who])
                while not server_errors:
                    await trio.sleep(0.01)
            assert accepted == []
            nursery.cancel_scope.cancel()
        (server_error,) = server_errors
        assert listener.handshake_failures == 1
        assert server_says in str(server_error)
        assert str(server_error).startswith("TLS handshake with 127.0.0.1:")
        assert client_says in client_message
        assert client_message.startswith("TLS handshake")
        assert "\n" not in client_message and "\n" not in str(server_error)
        # The same listener still serves a good client.
        await _good_session(listener, endpoint, identities["client"])


async def test_a_silent_client_does_not_hold_up_others(identities):
    server_errors: list[TlsHandshakeError] = []
    async with await open_listener(
        "tls://127.0.0.1:0", tls=identities["server"], handshake_timeout=0.5, on_handshake_error=server_errors.append
    ) as listener:
        endpoint = f"tls://127.0.0.1:{listener.port}"
        silent = await trio.open_tcp_stream("127.0.0.1", listener.port)
        try:
            with trio.fail_after(5):
                await _good_session(listener, endpoint, identities["client"])
                while not server_errors:
                    await trio.sleep(0.01)
            assert "no handshake within 0.5 s" in str(server_errors[0])
        finally:
            await silent.aclose()


async def test_a_listener_needs_its_certificate(identities, tmp_path):
    with pytest.raises(EndpointError, match="certificate"):
        await open_listener("tls://127.0.0.1:0", tls=identities["no certificate"])
    missing = TlsOptions(str(tmp_path / "none.pem"), str(tmp_path / "none.key"), identities["server"].ca)
    with pytest.raises(EndpointError, match="cannot load the TLS certificate"):
        await open_listener("tls://127.0.0.1:0", tls=missing)


async def test_a_client_that_does_not_speak_tls_is_logged_and_skipped(identities, caplog):
    async with await open_listener("tls://127.0.0.1:0", tls=identities["server"]) as listener:
        async with trio.open_nursery() as nursery:

            async def accept_loop() -> None:
                while True:
                    await listener.accept()

            nursery.start_soon(accept_loop)
            plain = await trio.open_tcp_stream("127.0.0.1", listener.port)
            await plain.send_all(b"GET / HTTP/1.0\r\n\r\n")
            with trio.fail_after(5):
                while listener.handshake_failures == 0:
                    await trio.sleep(0.01)
            await plain.aclose()
            nursery.cancel_scope.cancel()
        await _good_session(listener, f"tls://127.0.0.1:{listener.port}", identities["client"])
    (record,) = [r for r in caplog.records if r.name == "capsudo.transport.endpoints"]
    assert "does not speak TLS" in record.getMessage()
