"""capsudo-mcp: an MCP server that offers an agent the capsudo endpoints it holds.

Its tools list the capabilities held, run one (a session through the
capsudo library, with capped output), and ask the operator for one more
through capsudod's control socket. See the package's README and SKILL.md.
"""

from ._cli import main

__all__ = ["main"]
