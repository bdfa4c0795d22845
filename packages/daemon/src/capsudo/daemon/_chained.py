"""The session id a front-end passed along, so that one session reads as one story through a chain.

Nothing new crosses the wire. A front-end that hands the client's socket to
a capsudod it starts (capsudod-pwauth) names the id in that capsudod's
environment, CAPSUDO_SESSION_ID; a front-end that connects to the daemon
for the client (capsudo-proxy) binds its end of the connection to an
abstract address that names it. A Rust daemon ignores both. We take an id
only from a peer that could write our audit anyway (root, or our own
user), only in the form ours have, and never one that a running session
already has: a client cannot choose the id that its session is audited by.
"""

from __future__ import annotations

import os
from collections.abc import Container

from capsudo.transport import MessageChannel, is_session_id

#: The variable of a chained capsudod's environment that names its session's id.
SESSION_ID_VARIABLE = "CAPSUDO_SESSION_ID"


def inherited_session_id() -> str | None:
    """The id our starter gave the one session on stdin, taken out of our environment."""
    value = os.environ.pop(SESSION_ID_VARIABLE, None)
    return value if value is not None and is_session_id(value) else None


def chained_session_id(channel: MessageChannel, running: Container[str]) -> str | None:
    """The id the connection's address names, if a trusted peer sent it and no session has it."""
    named = getattr(channel, "peer_session", None)
    peer = channel.peer
    if named is None or peer is None or peer.uid not in (0, os.geteuid()) or named in running:
        return None
    return named
