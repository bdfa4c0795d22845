"""Reading capsudo.toml: a `[defaults]` table and one `[endpoint.NAME]` table each.

This module knows the file's shape, not the meaning of its fields: it merges
each endpoint over the defaults and remembers on which line every field was
written, so that whoever checks a value can name the file, the line and the
field in one line. tomllib gives values without positions, hence the small
scanner of keys below; it only has to find where a key was written, since
tomllib has already said the file is valid TOML.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field

DEFAULTS = "defaults"
ENDPOINT = "endpoint"
# Names become parts of log lines, unit names and socket activation's
# FileDescriptorName=, so they are kept to what all of those take.
ENDPOINT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}\Z")


class ConfigFileError(Exception):
    """The file cannot be served; the message is one line: `FILE:LINE: field: what is wrong`."""


@dataclass(frozen=True)
class Located:
    """One field's value and where it was written."""

    value: object
    line: int


@dataclass(frozen=True)
class EndpointTable:
    """An endpoint's fields, the defaults' included, each with its line."""

    name: str
    line: int
    fields: dict[str, Located] = field(default_factory=dict)


@dataclass(frozen=True)
class ConfigFile:
    path: str
    endpoints: dict[str, EndpointTable]

    def error(self, line: int, what: str) -> ConfigFileError:
        return ConfigFileError(f"{self.path}:{line}: {what}")


def read_config_file(path: str, *, extra_tables: tuple[str, ...] = ()) -> tuple[ConfigFile, dict[str, dict]]:
    """The endpoints the file declares, and the other top-level tables `extra_tables` allows."""
    try:
        with open(path, "rb") as file:
            raw = file.read()
    except OSError as exc:
        raise ConfigFileError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
        document = tomllib.loads(text)
    except UnicodeDecodeError as exc:
        raise ConfigFileError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(_decode_error(path, str(exc))) from None
    lines = KeyLines(text)
    config = ConfigFile(path, {})
    others: dict[str, dict] = {}
    for table, value in document.items():
        if table in (DEFAULTS, ENDPOINT):
            if not isinstance(value, dict):
                raise config.error(lines.of((table,)), f"{table}: must be a table ([{table}])")
        elif table in extra_tables and isinstance(value, dict):
            others[table] = value
        else:
            known = ", ".join(f"[{name}]" for name in (DEFAULTS, f"{ENDPOINT}.NAME", *extra_tables))
            raise config.error(lines.of((table,)), f"{table}: unknown table or field here (known: {known})")
    defaults = {key: Located(value, lines.of((DEFAULTS, key))) for key, value in document.get(DEFAULTS, {}).items()}
    for name, table in document.get(ENDPOINT, {}).items():
        line = lines.of((ENDPOINT, name))
        if not isinstance(table, dict):
            raise config.error(line, f"{ENDPOINT}.{name}: must be a table ([{ENDPOINT}.{name}])")
        if not ENDPOINT_NAME.match(name):
            raise config.error(line, f"{ENDPOINT}.{name}: an endpoint's name is letters, digits and _.@- "
                                     "(at most 64, starting with a letter or digit)")
        fields = dict(defaults)
        fields.update({key: Located(value, lines.of((ENDPOINT, name, key))) for key, value in table.items()})
        config.endpoints[name] = EndpointTable(name, line, fields)
    return config, others


def _decode_error(path: str, message: str) -> str:
    # tomllib says "Expected '=' after a key in a key/value pair (at line 3, column 9)".
    match = re.search(r"\s*\(at line (\d+), column \d+\)$", message)
    if match:
        return f"{path}:{match.group(1)}: {message[: match.start()]}"
    return f"{path}: {message}"


# A key as TOML writes it: bare, "basic" or 'literal', parts joined by dots.
_KEY_PART = r'(?:[A-Za-z0-9_-]+|"(?:[^"\\\n]|\\.)*"|\'[^\'\n]*\')'
_KEY = rf"{_KEY_PART}(?:\s*\.\s*{_KEY_PART})*"
_HEADER = re.compile(rf"\s*\[\[?\s*({_KEY})\s*\]\]?")
_ASSIGNMENT = re.compile(rf"\s*({_KEY})\s*=")
_PART = re.compile(_KEY_PART)


def _parts(key: str) -> tuple[str, ...]:
    return tuple(_unquote(part) for part in _PART.findall(key))


def _unquote(part: str) -> str:
    if part[0] == '"':
        return tomllib.loads(f"k = {part}")["k"]
    return part.strip("'")


class KeyLines:
    """The line on which each table and key of a valid TOML text first appears."""

    def __init__(self, text: str) -> None:
        self._lines: dict[tuple[str, ...], int] = {}
        table: tuple[str, ...] = ()
        open_brackets = 0
        in_multiline: str | None = None
        for number, line in enumerate(text.splitlines(), start=1):
            if in_multiline:
                if in_multiline in line:
                    in_multiline = None
                continue
            if open_brackets == 0:
                header = _HEADER.match(line)
                if header and not _ASSIGNMENT.match(line):
                    table = _parts(header.group(1))
                    self._note(table, number)
                    continue
                assignment = _ASSIGNMENT.match(line)
                if assignment:
                    self._note(table + _parts(assignment.group(1)), number)
            value = line.split("=", 1)[1] if open_brackets == 0 and "=" in line else line
            for quotes in ('"""', "'''"):
                if value.count(quotes) % 2 == 1:
                    in_multiline = quotes
            open_brackets = max(0, open_brackets + _brackets(value))

    def _note(self, key: tuple[str, ...], number: int) -> None:
        for length in range(1, len(key) + 1):
            self._lines.setdefault(key[:length], number)

    def of(self, key: tuple[str, ...]) -> int:
        """The line of `key`, else of the nearest table that holds it (dotted or inline keys)."""
        while key:
            if key in self._lines:
                return self._lines[key]
            key = key[:-1]
        return 1


def _brackets(text: str) -> int:
    """How many arrays or inline tables `text` leaves open, strings and comments aside."""
    depth = 0
    quote = None
    escaped = False
    for character in text:
        if quote:
            if escaped:
                escaped = False
            elif character == "\\" and quote == '"':
                escaped = True
            elif character == quote:
                quote = None
        elif character in "\"'":
            quote = character
        elif character == "#":
            break
        elif character in "[{":
            depth += 1
        elif character in "]}":
            depth -= 1
    return depth
