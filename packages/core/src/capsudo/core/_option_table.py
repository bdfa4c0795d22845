"""Options declared once: a command's parser, its -h text and its configuration fields.

An `Option` names a setting once: its letter and long name on the command
line, which is also its field in a configuration file, its kind, its default
and its help. `read_command_line()` parses argv by a table of them (with -h
and -V/--version for every command); `convert()` turns a raw value, a string
from the command line or a str/int/float/bool/list from TOML, into a typed
one, with a one-line error that names the option as it was given. Times
take `30s`, `5m`, `500ms` or plain seconds; sizes `64K`, `1G` or plain bytes.
The client reads its command line through here on every start, so this
module imports nothing.
"""

from __future__ import annotations

import sys

from ._options import UsageError, parse_options

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

# Kinds of value.
FLAG = "flag"  # present or not (a TOML boolean)
TEXT = "text"  # one string
LIST = "list"  # repeatable; a TOML array of strings
INTEGER = "integer"
SECONDS = "seconds"  # a duration: 30s, 5m, 500ms, or plain seconds
BYTES = "bytes"  # a size: 64K, 1G, or plain bytes

_METAVARS = {TEXT: "VALUE", LIST: "VALUE", INTEGER: "N", SECONDS: "DURATION", BYTES: "SIZE"}
_DURATION_UNITS = (("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600), ("d", 86400))
_SIZE_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_HELP_COLUMN = 28
_WIDTH = 79


class Option:
    """One setting: `name` is its long option and its configuration field."""

    __slots__ = ("name", "kind", "default", "help", "short", "metavar", "section", "minimum", "excludes",
                 "aliases", "default_text")

    def __init__(self, name: str, kind: str = FLAG, default=None, help: str = "", *, short: str | None = None,
                 metavar: str | None = None, section: str = "", minimum: float | None = None,
                 excludes: tuple[str, ...] = (), aliases: tuple[str, ...] = (),
                 default_text: str | None = None) -> None:
        self.name = name
        self.kind = kind
        self.default = default
        self.help = help
        self.short = short
        self.metavar = metavar or _METAVARS.get(kind)
        self.section = section
        self.minimum = minimum
        # Fields that cannot be given with this one (-i and -n).
        self.excludes = excludes
        # Older long names still read on the command line.
        self.aliases = aliases
        # The default as -h shows it, where its value alone would not say it.
        self.default_text = default_text

    def replace(self, **changes) -> Option:
        """A copy with some attributes changed: a command's wording of a shared option."""
        copy = Option.__new__(Option)
        for slot in Option.__slots__:
            setattr(copy, slot, changes.pop(slot, getattr(self, slot)))
        if changes:
            raise TypeError(f"Option has no attribute {next(iter(changes))}")
        return copy

    @property
    def flag(self) -> str:
        """How messages name the option when the user did not spell it."""
        return f"-{self.short}" if self.short else f"--{self.name}"

    @property
    def takes_value(self) -> bool:
        return self.kind != FLAG

    def shown_default(self) -> str | None:
        """The default as -h states it, or None when there is none to state."""
        if self.default_text is not None:
            return self.default_text
        if self.default is None or self.default is False or self.default == ():
            return None
        if self.kind == SECONDS:
            return f"{self.default:g}s"
        if isinstance(self.default, float):
            return f"{self.default:g}"
        return str(self.default)

    def __repr__(self) -> str:
        return f"Option({self.name!r})"


class Labels(dict):
    """Field → how the user named it: the flag as typed, else the option's own flag."""

    def __init__(self, table: Sequence[Option], spelled: Mapping[str, str] = {}) -> None:
        super().__init__(spelled)
        self._flags = {option.name: option.flag for option in table}

    def __missing__(self, field: str) -> str:
        return self._flags.get(field, field)


def read_command_line(table: Sequence[Option], argv: Sequence[str]):
    """(values, labels, operands) from argv; values is None for -h, "version" for -V.

    Values map a field to its raw value: True for a flag, a string, or a list
    of strings for a LIST option. Raises UsageError.
    """
    by_letter = {option.short: option for option in table if option.short}
    by_name = {name: option for option in table for name in (option.name, *option.aliases)}
    short = {letter: option.takes_value for letter, option in by_letter.items()}
    long = {name: option.takes_value for name, option in by_name.items()}
    short.update(h=False, V=False)
    long.update(help=False, version=False)
    options, operands = parse_options(argv, short, long)
    values: dict[str, object] = {}
    spelled: dict[str, str] = {}
    for typed, value in options:
        if typed in ("-h", "--help"):
            return None, Labels(table), operands
        if typed in ("-V", "--version"):
            return "version", Labels(table), operands
        option = by_letter[typed[1]] if len(typed) == 2 else by_name[typed[2:]]
        for other in option.excludes:
            if other in values:
                raise UsageError(f"{spelled[other]} and {typed} cannot be given together")
        spelled[option.name] = typed
        if option.kind == LIST:
            values.setdefault(option.name, []).append(value)
        else:
            values[option.name] = True if value is None else value
    return values, Labels(table, spelled), operands


def command_line_status(prog: str, usage: str, parsed) -> int | None:
    """Print what -h or -V asks for and return 0; None when the command should go on."""
    values = parsed[0]
    if values is None:
        sys.stdout.write(usage)
        return 0
    if values == "version":
        from capsudo.proto import __version__

        sys.stdout.write(f"{prog} {__version__}\n")
        return 0
    return None


def parse_or_status(prog: str, usage: Callable[[], str], table: Sequence[Option], argv: Sequence[str],
                    parse: Callable[[Sequence[str]], object]):
    """(what `parse(argv)` makes of argv, None), or (None, the exit status) when -h, -V or a
    mistake on the command line ends the command; the mistake's one line is printed."""
    try:
        parsed = read_command_line(table, argv)
        status = command_line_status(prog, usage(), parsed)
        if status is not None:
            return None, status
        return parse(argv), None
    except UsageError as exc:
        return None, usage_error(prog, exc)


def usage_error(prog: str, error: Exception) -> int:
    """The one line every command prints for a wrong command line; its status."""
    sys.stderr.write(f"{prog}: error: {error} (see {prog} -h)\n")
    return 2


# ---- values ------------------------------------------------------------------


def convert(option: Option, raw, label: str):
    """The typed value of `option` from a command-line string or a TOML value."""
    kind = option.kind
    if kind == FLAG:
        if raw is True or raw is False:
            return raw
        raise UsageError(f"{label} takes true or false, got {raw!r}")
    if kind == LIST:
        if isinstance(raw, str):
            return (raw,)
        if isinstance(raw, (list, tuple)) and all(isinstance(item, str) for item in raw):
            return tuple(raw)
        raise UsageError(f"{label} takes a list of strings, got {raw!r}")
    if kind == TEXT:
        if isinstance(raw, str):
            return raw
        raise UsageError(f"{label} takes a string, got {raw!r}")
    if raw is True or raw is False or not isinstance(raw, (str, int, float)):
        raise UsageError(f"{label} takes a number, got {raw!r}")
    if kind == INTEGER:
        number = _integer(raw, label)
    elif kind == SECONDS:
        number = _seconds(raw, label)
    elif kind == BYTES:
        number = _bytes(raw, label)
    else:
        raise ValueError(f"unknown kind of option {kind!r}")
    return _at_least(number, option.minimum, raw, label)


def _integer(raw, label: str) -> int:
    if isinstance(raw, float):
        if raw != int(raw):
            raise UsageError(f"{label} takes a whole number, got {raw!r}")
        return int(raw)
    try:
        return int(raw)
    except ValueError:
        raise UsageError(f"{label} takes a number, got {raw!r}") from None


def _seconds(raw, label: str) -> float:
    if not isinstance(raw, str):
        return float(raw)
    text, scale = raw.strip(), 1
    for suffix, factor in _DURATION_UNITS:
        # "ms" before "s", and "5m" is minutes, never "5" with an "m" of nothing.
        if text.endswith(suffix) and text[: -len(suffix)][-1:].isdigit():
            text, scale = text[: -len(suffix)], factor
            break
    try:
        return float(text) * scale
    except ValueError:
        raise UsageError(f"{label} takes a number, got {raw!r}") from None


def _bytes(raw, label: str) -> int:
    if isinstance(raw, float):
        return _integer(raw, label)
    if not isinstance(raw, str):
        return raw
    text, scale = raw.strip(), 1
    for suffix in ("iB", "B"):
        if text.endswith(suffix) and len(text) > len(suffix):
            text = text[: -len(suffix)]
            break
    if text[-1:].upper() in _SIZE_UNITS:
        text, scale = text[:-1], _SIZE_UNITS[text[-1].upper()]
    try:
        return int(text) * scale
    except ValueError:
        raise UsageError(f"{label} takes a number, got {raw!r}") from None


def _at_least(number, minimum, raw, label: str):
    floor = 0 if minimum is None else minimum
    if not floor <= number < float("inf"):
        shown = f"{floor:g}" if isinstance(floor, float) else floor
        raise UsageError(f"{label} must be a finite number of at least {shown}, got {raw!r}")
    return number


# ---- -h ------------------------------------------------------------------------


def usage_text(synopsis: str, description: str, table: Sequence[Option],
               intros: Mapping[str, str] = {}, epilog: str = "") -> str:
    """The -h text: synopsis, description, then each section's options with their defaults."""
    parts = [synopsis.rstrip("\n") + "\n", "\n", description.rstrip("\n") + "\n"]
    sections: list[str] = []
    for option in table:
        if option.section not in sections:
            sections.append(option.section)
    for section in sections:
        parts.append("\n")
        if section:
            parts.append(f"{section}:\n")
        if section in intros:
            parts.extend(_wrap(intros[section], 2))
        for option in table:
            if option.section == section:
                parts.extend(_option_lines(option))
        if not section:
            parts.append(f"  {'-h, --help':<{_HELP_COLUMN - 2}}show this help\n")
            parts.append(f"  {'-V, --version':<{_HELP_COLUMN - 2}}show the version\n")
    if epilog:
        parts.append("\n")
        parts.append(epilog.rstrip("\n") + "\n")
    return "".join(parts)


def _option_lines(option: Option) -> list[str]:
    names = f"-{option.short}, --{option.name}" if option.short else f"--{option.name}"
    if option.takes_value:
        names += f" {option.metavar}"
    text = option.help
    default = option.shown_default()
    if default is not None:
        text += f" (default: {default})"
    lines = _wrap(text, _HELP_COLUMN)
    lead = f"  {names}"
    if len(lead) < _HELP_COLUMN - 1:
        return [lead.ljust(_HELP_COLUMN) + lines[0].lstrip(" "), *lines[1:]]
    return [lead + "\n", *lines]


def _wrap(text: str, indent: int) -> list[str]:
    """Lines of `text` filled to the width, each indented and ending in a newline."""
    lines, line = [], ""
    for word in text.split():
        if line and indent + len(line) + 1 + len(word) > _WIDTH:
            lines.append(" " * indent + line + "\n")
            line = word
        else:
            line = f"{line} {word}" if line else word
    lines.append(" " * indent + line + "\n")
    return lines
