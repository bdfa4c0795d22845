"""The capsudoctl command: the operator's hand on a running capsudod.

It speaks the control socket's protocol (one JSON line each way) to list
endpoints and sessions, grant endpoints for a while or a number of uses,
renew, revoke and kill; see docs/control.md.
"""

from ._cli import exchange, main

__all__ = ["exchange", "main"]
