"""POSIX-style option parsing shared by the commands.

Options end at the first operand or at `--`, so everything after the program
name belongs to the program (`capsudo ls -l`). Short flags combine (`-fE`),
a short option's value may be attached (`-S/run/x`) or follow; long options
take `--name value` or `--name=value`. The standard library's parsers either
cost start-up time or do not stop at the first operand, hence this page.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing and collections cost the client start-up time
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence


class UsageError(Exception):
    """The command line is wrong; the message says how, on one line."""


def parse_options(
    argv: Sequence[str], short: Mapping[str, bool], long: Mapping[str, bool] = {}
) -> tuple[list[tuple[str, str | None]], list[str]]:
    """Split argv into (options, operands).

    `short` maps a letter to whether it takes a value, `long` a name (without
    dashes) likewise. Each option comes back as ("-x", value) or ("--name", value).
    """
    options: list[tuple[str, str | None]] = []
    index = 0
    while index < len(argv):
        word = argv[index]
        if word == "--":
            index += 1
            break
        if word.startswith("--"):
            name, has_value, value = word[2:].partition("=")
            if name not in long:
                raise UsageError(f"unknown option --{name}")
            if long[name]:
                if not has_value:
                    index += 1
                    if index >= len(argv):
                        raise UsageError(f"option --{name} needs a value")
                    value = argv[index]
                options.append((f"--{name}", value))
            elif has_value:
                raise UsageError(f"option --{name} takes no value")
            else:
                options.append((f"--{name}", None))
        elif word.startswith("-") and word != "-":
            position = 1
            while position < len(word):
                letter = word[position]
                if letter not in short:
                    raise UsageError(f"unknown option -{letter}")
                if short[letter]:
                    value = word[position + 1 :]
                    if not value:
                        index += 1
                        if index >= len(argv):
                            raise UsageError(f"option -{letter} needs a value")
                        value = argv[index]
                    options.append((f"-{letter}", value))
                    break
                options.append((f"-{letter}", None))
                position += 1
        else:
            break
        index += 1
    return options, list(argv[index:])
