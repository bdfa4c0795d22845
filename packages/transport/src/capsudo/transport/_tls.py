"""Mutual TLS for tls:// endpoints: where the keys come from, and what a failure means.

Both sides authenticate: the listener accepts only clients whose certificate
its CA signed, and the client accepts only a server whose certificate (and
name) its CA vouches for. Failures are turned into one line a person can act
on, because the raw OpenSSL reason ("tlsv13 alert certificate required") is
reported on the side that did nothing wrong.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass

from ._errors import EndpointError

ENV_CERT = "CAPSUDO_TLS_CERT"
ENV_KEY = "CAPSUDO_TLS_KEY"
ENV_CA = "CAPSUDO_TLS_CA"


class TlsHandshakeError(EndpointError):
    """One TLS connection failed its handshake; the endpoint itself is fine."""


@dataclass(frozen=True, slots=True)
class TlsOptions:
    """Paths of our certificate chain, its private key, and the CA we trust for the peer.

    A listener needs all three. A connector may leave out `cert` and `key`,
    though a capsudo listener then refuses it.
    """

    cert: str | None
    key: str | None
    ca: str

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise ValueError("a TLS certificate and its key go together: give both or neither")

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> TlsOptions | None:
        """From CAPSUDO_TLS_CERT, CAPSUDO_TLS_KEY and CAPSUDO_TLS_CA; None when none is set.

        Raises ValueError when only some are set, naming the missing ones.
        """
        environ = os.environ if environ is None else environ
        values = {name: environ.get(name) or None for name in (ENV_CERT, ENV_KEY, ENV_CA)}
        if not any(values.values()):
            return None
        if values[ENV_CA] is None or (values[ENV_CERT] is None) != (values[ENV_KEY] is None):
            missing = ", ".join(name for name, value in values.items() if value is None)
            raise ValueError(f"incomplete TLS settings in the environment: {missing} not set")
        return cls(values[ENV_CERT], values[ENV_KEY], values[ENV_CA])

    def server_context(self) -> ssl.SSLContext:
        """A context that requires and verifies a client certificate signed by `ca`."""
        if self.cert is None or self.key is None:
            raise EndpointError("a TLS listener needs a certificate and a key")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.verify_mode = ssl.CERT_REQUIRED
        self._load(context)
        return context

    def client_context(self) -> ssl.SSLContext:
        """A context that verifies the server's certificate and name against `ca`."""
        # Not create_default_context: it loads the system's CA store (some
        # 150 certificates, 15 ms of every start) and trusts all of them
        # beside ours. PROTOCOL_TLS_CLIENT checks the certificate and the name.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._load(context)
        return context

    def _load(self, context: ssl.SSLContext) -> None:
        try:
            context.load_verify_locations(cafile=self.ca)
        except (OSError, ssl.SSLError) as exc:
            raise EndpointError(f"cannot load the TLS CA certificate {self.ca}: {_reason(exc)}") from None
        if self.cert is not None:
            try:
                context.load_cert_chain(self.cert, self.key)
            except (OSError, ssl.SSLError) as exc:
                raise EndpointError(
                    f"cannot load the TLS certificate {self.cert} with key {self.key}: {_reason(exc)}"
                ) from None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason.replace("_", " ").lower() if exc.reason else str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


def find_ssl_error(exc: BaseException | None) -> ssl.SSLError | ssl.CertificateError | None:
    """The SSL error behind a trio.BrokenResourceError, if there is one."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, (ssl.SSLError, ssl.CertificateError)):
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


# Alerts that a peer sends when it refuses our certificate. Under TLS 1.3 the
# server checks the client's certificate after the client considers the
# handshake done, so the client meets these on its first read, not at connect.
_REFUSED_OUR_CERTIFICATE = {
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "the peer requires a certificate and we presented none (certificate required)",
    "SSLV3_ALERT_HANDSHAKE_FAILURE": "the peer refused the handshake (handshake failure)",
    "TLSV1_ALERT_UNKNOWN_CA": "the peer does not trust the CA that signed our certificate (unknown CA)",
    "SSLV3_ALERT_BAD_CERTIFICATE": "the peer refused our certificate (bad certificate)",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "the peer says our certificate has expired (certificate expired)",
    "SSLV3_ALERT_CERTIFICATE_REVOKED": "the peer says our certificate was revoked (certificate revoked)",
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE": "the peer cannot use our certificate (unsupported certificate)",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "the peer refused our certificate (certificate unknown)",
    "TLSV1_ALERT_ACCESS_DENIED": "the peer refused us (access denied)",
    "TLSV1_ALERT_PROTOCOL_VERSION": "no TLS version both sides accept (protocol version)",
}


def is_refusal_of_our_certificate(error: BaseException | None) -> bool:
    ssl_error = find_ssl_error(error)
    return isinstance(ssl_error, ssl.SSLError) and ssl_error.reason in _REFUSED_OUR_CERTIFICATE


def describe_tls_failure(error: BaseException | None, *, server_side: bool) -> str:
    """One line on why a TLS handshake (or the link after it) failed."""
    ssl_error = find_ssl_error(error)
    if ssl_error is None:
        if error is not None and isinstance(error.__cause__, OSError) and error.__cause__.strerror:
            return error.__cause__.strerror.lower()
        return "the connection closed during the handshake"
    if isinstance(ssl_error, ssl.SSLCertVerificationError):
        detail = ssl_error.verify_message or _reason(ssl_error)
        if server_side:
            return f"the client's certificate is not signed by the accepted CA ({detail})"
        return f"the server's certificate is not trusted ({detail})"
    if isinstance(ssl_error, ssl.CertificateError):
        return f"the server's certificate does not match its name ({ssl_error})"
    reason = ssl_error.reason or ""
    if reason in _REFUSED_OUR_CERTIFICATE:
        return _REFUSED_OUR_CERTIFICATE[reason].replace("the peer", "the client" if server_side else "the server", 1)
    if reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE":
        return "the client presented no certificate (certificate required)"
    if reason in ("UNEXPECTED_EOF_WHILE_READING", "EOF_IN_VIOLATION_OF_PROTOCOL"):
        return "the peer closed the connection in the middle of the TLS exchange"
    if reason in ("WRONG_VERSION_NUMBER", "HTTP_REQUEST", "UNKNOWN_PROTOCOL", "RECORD_LAYER_FAILURE"):
        return f"the peer does not speak TLS ({_reason(ssl_error)})"
    return _reason(ssl_error)
