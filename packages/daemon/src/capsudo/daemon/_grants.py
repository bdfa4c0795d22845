"""Grants: endpoints made at run time through the control socket, and kept across restarts.

A grant is what a file endpoint is (its fields go through the same
`build_config`), plus a lifetime counted in wall-clock time and uses. The
state directory holds `grants.json` (root's, 0600, replaced whole by a
rename so that a crash leaves the old or the new, never half) and the
scripts grants run, each named by the SHA-256 of its content: what was
approved is what runs, whatever happens to the file it came from. At start
the grants are read back with their remaining time and uses; one that
expired or was spent meanwhile is dropped.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from dataclasses import dataclass, field

from capsudo.core import UsageError, build_config, rfc3339

from ._approval import approval_settings
from ._declared import DeclaredEndpoint

DEFAULT_STATE = "/var/lib/capsudo"
STATE_FILE = "grants.json"
SCRIPTS = "scripts"


class GrantError(Exception):
    """A grant request that cannot be honoured; one line for the operator."""


@dataclass
class Grant:
    name: str
    #: The endpoint's fields as build_config takes them, without its lifetime.
    fields: dict
    expires_at: float | None
    uses_left: int | None
    script: str | None = None  # the SHA-256 of the script it runs, if one
    at_expiry: str = "hang-up"
    created: float = field(default_factory=time.time)

    def declared(self) -> DeclaredEndpoint:
        values = dict(self.fields)
        if self.expires_at is not None:
            values["expires"] = rfc3339(self.expires_at) if self.expires_at % 1 == 0 else _precise(self.expires_at)
        if self.uses_left is not None:
            values["uses"] = self.uses_left
        values["at-expiry"] = self.at_expiry
        labels = {key: f"--{key}" for key in values}
        try:
            config = build_config(values, labels)
            approval = approval_settings(values, labels)
        except UsageError as exc:
            raise GrantError(str(exc)) from None
        return DeclaredEndpoint(self.name, config, "grant", approval=approval)

    def spent(self, now: float) -> bool:
        return (self.expires_at is not None and now >= self.expires_at) or self.uses_left == 0

    def as_json(self) -> dict:
        return {"name": self.name, "fields": self.fields, "expires_at": self.expires_at,
                "uses_left": self.uses_left, "script": self.script, "at_expiry": self.at_expiry,
                "created": self.created}


def _precise(seconds: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class StateDirectory:
    """The daemon's state directory: created if absent, refused if anyone but root can change it."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)

    def check(self) -> None:
        try:
            os.makedirs(self.path, mode=0o711, exist_ok=True)
            st = os.lstat(self.path)
        except OSError as exc:
            raise GrantError(f"state directory {self.path}: {exc.strerror}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise GrantError(f"state directory {self.path}: not a directory")
        if st.st_uid != os.geteuid():
            raise GrantError(f"state directory {self.path}: owned by uid {st.st_uid}, not by this daemon's user")
        if st.st_mode & 0o022:
            raise GrantError(f"state directory {self.path}: group or others can write it (mode "
                             f"{stat.S_IMODE(st.st_mode):04o}); chmod go-w it")

    def load(self) -> list[Grant]:
        path = os.path.join(self.path, STATE_FILE)
        try:
            with open(path, encoding="utf-8") as file:
                document = json.load(file)
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise GrantError(f"{path}: cannot read the grants: {exc}") from None
        return [Grant(**entry) for entry in document.get("grants", [])]

    def save(self, grants: list[Grant]) -> None:
        path = os.path.join(self.path, STATE_FILE)
        text = json.dumps({"grants": [grant.as_json() for grant in grants]}, indent=1) + "\n"
        _write_atomically(path, text.encode(), 0o600)

    def store_script(self, content: bytes) -> tuple[str, str]:
        """(sha256, path) of a copy of `content` that only root can change and that anyone may run."""
        digest = hashlib.sha256(content).hexdigest()
        directory = os.path.join(self.path, SCRIPTS)
        os.makedirs(directory, mode=0o711, exist_ok=True)
        path = os.path.join(directory, digest)
        if not os.path.exists(path):
            _write_atomically(path, content, 0o555)
        return digest, path

    def script_path(self, digest: str) -> str:
        return os.path.join(self.path, SCRIPTS, digest)


def _write_atomically(path: str, content: bytes, mode: int) -> None:
    temporary = f"{path}.{os.getpid()}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        view = memoryview(content)
        while view:
            view = view[os.write(fd, view):]
        os.fchmod(fd, mode)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    directory = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
