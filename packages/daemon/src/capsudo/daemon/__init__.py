"""The capsudod command: hold a privilege and delegate it through an endpoint."""

from ._cli import main

__all__ = ["main"]
