"""The one error of an endpoint's declarations: what it asks for cannot be had here.

Raised when an endpoint is configured (a user that does not exist, a limit
this system cannot enforce) and again, failing closed, when a session finds
the same at its start. The text is one line for a person.
"""

from __future__ import annotations


class PolicyError(ValueError):
    """An endpoint's declaration that cannot be honoured; str() is the one line to show."""
