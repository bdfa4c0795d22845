"""The capsudo-proxy command: carry a capability across a boundary.

It listens on one endpoint and forwards every session to another, in any
combination of transports, adding no authority of its own.
"""

from ._cli import main

__all__ = ["main"]
