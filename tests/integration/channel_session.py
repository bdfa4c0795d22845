"""One non-interactive session over any MessageChannel, driven from the test with real pipes."""

from __future__ import annotations

import os

import trio

from capsudo.proto import Arg, End, Error, Exit, Fd, SessionKind, SessionType
from capsudo.transport import MessageChannel


async def run_over(channel: MessageChannel, stdin_data: bytes, argv=("ignored",), timeout: float = 60):
    """(status, stdout, stderr, errors) of one session; the channel is closed afterwards.

    The three delegated descriptors are pipes; their output is read after
    the Exit, so everything the program wrote must have been delivered by then.
    """
    in_read, in_write = os.pipe()
    out_read, out_write = os.pipe()
    err_read, err_write = os.pipe()
    os.write(in_write, stdin_data)  # small inputs only: a pipe holds 64 KiB
    os.close(in_write)
    errors: list[str] = []
    try:
        with trio.fail_after(timeout):
            async with channel:
                for value in argv:
                    await channel.send(Arg(value))
                await channel.send(SessionType(SessionKind.NON_INTERACTIVE))
                await channel.send(Fd(3), [in_read, out_write, err_write])
                await channel.send(End())
                while True:
                    received = await channel.receive()
                    assert received is not None, "the channel closed without an exit status"
                    if isinstance(received.message, Error):
                        errors.append(received.message.text)
                    if isinstance(received.message, Exit):
                        status = received.message.status
                        break
    finally:
        for fd in (in_read, out_write, err_write):
            os.close(fd)
    with os.fdopen(out_read, "rb") as out, os.fdopen(err_read, "rb") as err:
        return status, out.read(), err.read(), errors
