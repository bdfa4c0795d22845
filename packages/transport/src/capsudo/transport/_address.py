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

TYPE_CHECKING = False  # typing, dataclasses, re and ipaddress cost the one-shot client start-up time
if TYPE_CHECKING:
    from typing import Union

#: The context id that listens on every one (vsock's VMADDR_CID_ANY).
VMADDR_CID_ANY = 0xFFFFFFFF

SCHEMES = ("unix", "tcp", "tls", "vsock", "ssh")


def bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class _Address:
    """An immutable value with named fields, compared and hashed by them."""

    __slots__ = ()
    scheme = ""
    #: Whether descriptors travel as they are (SCM_RIGHTS), so the program
    #: reads and writes the client's own; elsewhere they become streams.
    passes_descriptors = False

    def __init__(self, *values) -> None:
        if len(values) != len(self.__slots__):
            raise TypeError(f"{type(self).__name__} takes {', '.join(self.__slots__)}")
        for name, value in zip(self.__slots__, values):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def _values(self) -> tuple:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._values()))

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={value!r}" for name, value in zip(self.__slots__, self._values()))
        return f"{type(self).__name__}({fields})"


class UnixEndpoint(_Address):
    __slots__ = ("path",)
    scheme = "unix"
    passes_descriptors = True

    def __str__(self) -> str:
        return self.path


class TcpEndpoint(_Address):
    __slots__ = ("host", "port")
    scheme = "tcp"

    def __str__(self) -> str:
        return f"tcp://{bracket(self.host)}:{self.port}"


class TlsEndpoint(_Address):
    __slots__ = ("host", "port")
    scheme = "tls"

    def __str__(self) -> str:
        return f"tls://{bracket(self.host)}:{self.port}"


class VsockEndpoint(_Address):
    __slots__ = ("cid", "port")
    scheme = "vsock"

    def __str__(self) -> str:
        cid = "any" if self.cid == VMADDR_CID_ANY else str(self.cid)
        return f"vsock://{cid}:{self.port}"


class SshEndpoint(_Address):
    __slots__ = ("host", "path", "user", "port")
    scheme = "ssh"

    def __init__(self, host: str, path: str, user: str | None = None, port: int | None = None) -> None:
        super().__init__(host, path, user, port)

    def __str__(self) -> str:
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port is not None else ""
        return f"ssh://{user}{bracket(self.host)}{port}{self.path}"


if TYPE_CHECKING:
    Endpoint = Union[UnixEndpoint, TcpEndpoint, TlsEndpoint, VsockEndpoint, SshEndpoint]
else:
    Endpoint = _Address

_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_LABEL_ENDS = _LETTERS | frozenset("0123456789_")
_USER_CHARS = _LABEL_ENDS | frozenset(".-")


def _is_hostname(host: str) -> bool:
    """Dot-separated labels of letters, digits and _, with - inside a label; one trailing dot allowed."""
    labels = (host[:-1] if host.endswith(".") else host).split(".")
    return all(
        label and label[0] in _LABEL_ENDS and label[-1] in _LABEL_ENDS and all(c in _LABEL_ENDS or c == "-" for c in label)
        for label in labels
    )


def _is_user(name: str) -> bool:
    return bool(name) and name[0] != "-" and all(c in _USER_CHARS for c in name)


def _misspelt_scheme(text: str) -> str | None:
    """`tcp:host:1` and the like: a known scheme without its //."""
    name, colon, _ = text.partition(":")
    return name.lower() if colon and name.lower() in SCHEMES else None


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
        name = _misspelt_scheme(text)
        if name is not None:
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
        import ipaddress  # only for an address in brackets

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
        if not _is_hostname(host):
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
        if not _is_user(user):
            raise ValueError(f"invalid endpoint {text!r}: {user!r} is not a user name")
    host, port = _host_port(authority, text, "ssh")
    if port == 0:
        raise ValueError(f"invalid endpoint {text!r}: port 0 cannot be connected to")
    return SshEndpoint(host, "/" + path, user, port)


def as_endpoint(endpoint: Endpoint | str) -> Endpoint:
    return parse_endpoint(endpoint) if isinstance(endpoint, str) else endpoint
