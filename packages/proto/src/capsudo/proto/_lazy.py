"""Names a package exports but loads on first use.

Every `capsudo` command imports the packages at start-up; a name's module
is imported only when somebody asks for the name, so the one-shot client
pays for what it uses and nothing else.
"""

from __future__ import annotations

import sys


def lazy_exports(package: str, home: dict[str, str], names: list[str]):
    """A module's __getattr__ and __dir__ for `names`, each found in the submodule `home` gives it."""

    def __getattr__(name: str):
        module = home.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(__import__(package + module, fromlist=[name]), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(names)

    return __getattr__, __dir__
