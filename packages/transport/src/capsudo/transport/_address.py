"""Endpoint addresses: one syntax wherever an endpoint is named.

    /run/capsudo/default         a Unix socket (real descriptors, peer credentials)
    unix:///run/capsudo/default  the same, spelled as a URL
    tcp://HOST:PORT              TCP, the multiplexed channel; IPv6 as [::1]
    tls://HOST:PORT              TCP with mutual TLS
    vsock://CID:PORT             AF_VSOCK between a virtual machine and its host
    ssh://[USER@]HOST[:PORT]/PATH  a Unix socket on another host, reached over ssh

Only the grammar lives here, without trio, so that whoever must choose a
way to an endpoint (the one-shot client, a configuration check) can parse
it cheaply; `_connect` reaches one and `_listen` serves one.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import ClassVar, Union

#: The context id that listens on every one (vsock's VMADDR_CID_ANY).
VMADDR_CID_ANY = 0xFFFFFFFF

SCHEMES = ("unix", "tcp", "tls", "vsock", "ssh")

def bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


@dataclass(frozen=True, slots=True)
class UnixEndpoint:
    path: str
    scheme: ClassVar[str] = "unix"

    def __str__(self) -> str:
        return self.path


@dataclass(frozen=True, slots=True)
class TcpEndpoint:
    host: str
    port: int
    scheme: ClassVar[str] = "tcp"

    def __str__(self) -> str:
        return f"tcp://{bracket(self.host)}:{self.port}"


@dataclass(frozen=True, slots=True)
class TlsEndpoint:
    host: str
    port: int
    scheme: ClassVar[str] = "tls"

    def __str__(self) -> str:
        return f"tls://{bracket(self.host)}:{self.port}"


@dataclass(frozen=True, slots=True)
class VsockEndpoint:
    cid: int
    port: int
    scheme: ClassVar[str] = "vsock"

    def __str__(self) -> str:
        cid = "any" if self.cid == VMADDR_CID_ANY else str(self.cid)
        return f"vsock://{cid}:{self.port}"


@dataclass(frozen=True, slots=True)
class SshEndpoint:
    host: str
    path: str
    user: str | None = None
    port: int | None = None
    scheme: ClassVar[str] = "ssh"

    def __str__(self) -> str:
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port is not None else ""
        return f"ssh://{user}{bracket(self.host)}{port}{self.path}"


Endpoint = Union[UnixEndpoint, TcpEndpoint, TlsEndpoint, VsockEndpoint, SshEndpoint]

_SCHEME_PREFIX = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_HOSTNAME = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?)*\.?$")
_USER = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.-]*$")


def parse_endpoint(text: str) -> Endpoint:
    """The endpoint `text` names. Raises ValueError with a one-line reason."""
    if not isinstance(text, str):
        raise TypeError(f"an endpoint is a string, not {type(text).__name__}")
    if not text:
        raise ValueError("invalid endpoint '': it is empty")
    if any(c in text for c in "\0\n\r"):
        raise ValueError(f"invalid endpoint {text!r}: control characters are not allowed")
    scheme, separator, rest = text.partition("://")
    if not separator:
        prefix = _SCHEME_PREFIX.match(text)
        if prefix and prefix.group(1).lower() in SCHEMES:
            name = prefix.group(1).lower()
            raise ValueError(f"invalid endpoint {text!r}: write {name}://…")
        return UnixEndpoint(text)
    scheme = scheme.lower()
    if scheme == "unix":
        if not rest.startswith("/"):
            raise ValueError(f"invalid endpoint {text!r}: unix:// takes an absolute path, as in unix:///run/capsudo/default")
        return UnixEndpoint(rest)
    if scheme in ("tcp", "tls"):
        host, port = _host_port(rest, text, scheme)
        if port is None:
            raise ValueError(f"invalid endpoint {text!r}: missing port, as in {scheme}://{bracket(host)}:4711")
        return (TcpEndpoint if scheme == "tcp" else TlsEndpoint)(host, port)
    if scheme == "vsock":
        return _parse_vsock(rest, text)
    if scheme == "ssh":
        return _parse_ssh(rest, text)
    raise ValueError(f"invalid endpoint {text!r}: unknown scheme {scheme}://, expected one of {', '.join(s + '://' for s in SCHEMES)} or a path")


def _host_port(authority: str, text: str, scheme: str, *, max_port: int = 65535) -> tuple[str, int | None]:
    if not authority:
        raise ValueError(f"invalid endpoint {text!r}: missing host")
    for char, what in (("/", "path"), ("?", "query"), ("#", "fragment"), ("@", "user name")):
        if char in authority:
            raise ValueError(f"invalid endpoint {text!r}: {scheme}:// takes no {what}")
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            raise ValueError(f"invalid endpoint {text!r}: unclosed '[' around an IPv6 address")
        host = authority[1:end]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"invalid endpoint {text!r}: {host!r} is not an IPv6 address") from None
        rest = authority[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ValueError(f"invalid endpoint {text!r}: unexpected {rest!r} after the address")
        port_text = rest[1:] if rest else None
    else:
        host, colon, port_text = authority.rpartition(":")
        if not colon:
            host, port_text = authority, None
        if ":" in host:
            raise ValueError(f"invalid endpoint {text!r}: an IPv6 address goes in brackets, as in {scheme}://[::1]:4711")
        if not host:
            raise ValueError(f"invalid endpoint {text!r}: missing host")
        if not _HOSTNAME.match(host):
            raise ValueError(f"invalid endpoint {text!r}: {host!r} is not a host name or address")
    if port_text is None:
        return host, None
    return host, _port(port_text, text, max_port)


def _port(port_text: str, text: str, max_port: int) -> int:
    if not port_text.isascii() or not port_text.isdigit():
        raise ValueError(f"invalid endpoint {text!r}: port {port_text!r} is not a number")
    port = int(port_text)
    if port > max_port:
        raise ValueError(f"invalid endpoint {text!r}: port {port} is above {max_port}")
    return port


def _parse_vsock(rest: str, text: str) -> VsockEndpoint:
    cid_text, colon, port_text = rest.partition(":")
    if not colon or not cid_text or not port_text:
        raise ValueError(f"invalid endpoint {text!r}: expected vsock://CID:PORT")
    if cid_text.lower() == "any":
        cid = VMADDR_CID_ANY
    elif cid_text.isascii() and cid_text.isdigit() and int(cid_text) <= 0xFFFFFFFF:
        cid = int(cid_text)
    else:
        raise ValueError(f"invalid endpoint {text!r}: context id {cid_text!r} is not a number from 0 to 4294967295 (or 'any')")
    return VsockEndpoint(cid, _port(port_text, text, 0xFFFFFFFF))


def _parse_ssh(rest: str, text: str) -> SshEndpoint:
    authority, slash, path = rest.partition("/")
    if not slash or not path:
        raise ValueError(f"invalid endpoint {text!r}: ssh:// needs the remote socket's path, as in ssh://host/run/capsudo/default")
    user = None
    if "@" in authority:
        user, _, authority = authority.rpartition("@")
        if not _USER.match(user):
            raise ValueError(f"invalid endpoint {text!r}: {user!r} is not a user name")
    host, port = _host_port(authority, text, "ssh")
    if port == 0:
        raise ValueError(f"invalid endpoint {text!r}: port 0 cannot be connected to")
    return SshEndpoint(host, "/" + path, user, port)


def as_endpoint(endpoint: Endpoint | str) -> Endpoint:
    return parse_endpoint(endpoint) if isinstance(endpoint, str) else endpoint
