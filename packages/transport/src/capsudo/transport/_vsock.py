"""AF_VSOCK sockets: a byte channel between a virtual machine and its host."""

from __future__ import annotations

import socket

import trio

from ._errors import EndpointError


def _new_socket(text: str, doing: str) -> trio.socket.SocketType:
    family = getattr(socket, "AF_VSOCK", None)
    if family is None:
        raise EndpointError(f"cannot {doing} {text}: this Python has no AF_VSOCK support")
    try:
        return trio.socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        raise EndpointError(f"cannot {doing} {text}: vsock is not available here ({exc.strerror or exc})") from None


async def connect_vsock(cid: int, port: int, text: str) -> trio.SocketStream:
    sock = _new_socket(text, "connect to")
    try:
        await sock.connect((cid, port))
    except OSError as exc:
        sock.close()
        raise EndpointError(f"cannot connect to {text}: {exc.strerror or exc}") from None
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


async def listen_vsock(cid: int, port: int, text: str, backlog: int = 128) -> trio.SocketListener:
    sock = _new_socket(text, "listen on")
    try:
        await sock.bind((cid, port))
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise EndpointError(f"cannot listen on {text}: {exc.strerror or exc}") from None
    return trio.SocketListener(sock)
