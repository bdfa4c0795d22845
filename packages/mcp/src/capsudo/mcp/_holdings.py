"""The capabilities this server holds: named addresses, from the command line or a directory of sockets.

A directory (`--endpoints-dir /run/cap`) is read again at every call, so a
grant that appears there is held from then on, and one that ends is gone.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field


@dataclass
class Holdings:
    named: dict[str, str] = field(default_factory=dict)
    directories: list[str] = field(default_factory=list)
    #: What the operator declared about a capability (capsudo-mcp --description, --pinned).
    declared: dict[str, dict[str, object]] = field(default_factory=dict)

    def addresses(self) -> dict[str, str]:
        """Name to address; a name given with --endpoint wins over a socket of the same name."""
        found: dict[str, str] = {}
        for directory in self.directories:
            try:
                entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
            except OSError:
                continue  # a directory that is gone holds nothing; the listing says so by its absence
            for entry in entries:
                try:
                    if stat.S_ISSOCK(entry.stat().st_mode):
                        found[entry.name] = entry.path
                except OSError:
                    continue
        found.update(self.named)
        return found

    def declared_for(self, name: str) -> dict[str, object]:
        return self.declared.get(name, {})
