"""The capsudo command: run a program through a capability endpoint."""

from ._cli import main

__all__ = ["main"]
