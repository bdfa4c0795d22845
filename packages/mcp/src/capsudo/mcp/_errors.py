"""The errors an agent can act on: each a code, what happened, and what to do next.

The codes are part of capsudo-mcp's interface (SKILL.md and the package's
README list them); a tool's failure carries one in its structured content.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# code: what to do next, in the words an agent reads.
NEXT_STEPS = {
    "unknown-capability": "call list_capabilities and use one of the names it gives; to get a new one, call request_capability",
    "refused-arguments": "this capability runs one fixed command: call it again without arguments",
    "approval-pending": "a person must approve this session and none did in time; its request was withdrawn: tell the user, "
                        "then call again once with a longer timeout (up to 600) and have them approve it meanwhile "
                        "(capsudoctl pending, capsudoctl approve ID); never in a loop",
    "denied": "a person refused this session, or let its approval time run out: tell the user and do not ask again "
              "without a new reason",
    "password-needed": "this capability asks for a person's password, which this server cannot give; ask a person to run it",
    "expired": "this capability has expired; call request_capability if you still need it, saying why",
    "spent": "this capability has no uses left; call request_capability if you still need it, saying why",
    "revoked": "the operator revoked this capability; do not ask for it again without a new reason",
    "daemon-not-running": "nothing serves this capability now (its daemon is not running, or the grant ended); tell a person",
    "refused": "the endpoint refused the session; read the message, and do not retry the same call",
    "timeout": "the session took longer than the timeout and its program was hung up, perhaps halfway: check its effect "
               "before starting it again",
    "request-failed": "the operator's control socket did not take the request; tell a person",
}


@dataclass(frozen=True)
class AgentError:
    code: str
    message: str

    @property
    def next_step(self) -> str:
        return NEXT_STEPS[self.code]

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message, "next": self.next_step}


# The daemon's fixed wordings for an ended capability (capsudo.core's lifetime reasons).
_ENDED = (
    ("this capability expired", "expired"),
    ("this capability has no uses left", "spent"),
    ("this capability was revoked", "revoked"),
)


# The daemon's wordings for a refused approval (docs/approval.md): "request ID was denied by USER: TEXT",
# "request ID was not approved within 60s: denied".
_DENIED = re.compile(r"^request \S+ was (denied by |not approved within )")


def classify_daemon_errors(errors: list[str]) -> str | None:
    """The code for a session the daemon ended with a lifetime reason or an approval's refusal, if any."""
    for line in errors:
        for prefix, code in _ENDED:
            if line.startswith(prefix):
                return code
        if _DENIED.match(line):
            return "denied"
    return None


def classify_failure(failure: str) -> str:
    """The code for a session that got no status: unreachable, or a password asked for."""
    if "asks for a password" in failure:
        return "password-needed"
    if failure.startswith("no endpoint at") or "a socket nobody listens on" in failure:
        return "daemon-not-running"
    return "refused"
