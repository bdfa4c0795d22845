"""capsudod-pwauth: a password front-end that checks the caller through PAM.

It reads the first message of each connection. A caller without a Secret is
asked for one (Unauthorized); a Secret goes to PAM for the caller's own user,
as the kernel names it; on success the live connection becomes the standard
input of the chained command (normally `capsudod`), which reads the rest of
the handshake as if the client had come straight to it.
"""

from ._cli import main

__all__ = ["main"]
