"""The man pages: clean under mandoc's linter, and their OPTIONS what each command's table declares.

Each page's OPTIONS section lists every option of the command's table, by
its short and long name (and older aliases), plus -h and -V, and nothing
else; its SYNOPSIS names no other flag; a numeric default stated by -h is
stated in the page too. So a new option, a renamed one or a changed limit
fails here until its page says so. capsudo.toml(5) lists, as items of its
FIELDS OF AN ENDPOINT section, exactly the fields an endpoint's table
accepts, with the same defaults, and its EXAMPLES hold examples/capsudo.toml.
capsudoctl(8) lists its global options under OPTIONS, the commands its
parser knows as the items of COMMANDS, and each command's options in a
subsection `Options of COMMAND`, exactly as its tables declare them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from capsudo.client._cli import OPTIONS as CLIENT_OPTIONS
from capsudo.core import BYTES, INTEGER, SECONDS
from capsudo.ctl._cli import GLOBAL_OPTIONS, control_commands
from capsudo.daemon._cli import command_line_options
from capsudo.daemon._declared import file_fields
from capsudo.proxy._settings import proxy_options
from capsudo.pwauth._cli import pwauth_options

ROOT = Path(__file__).resolve().parents[1]
PAGES = {
    "capsudo.1": lambda: CLIENT_OPTIONS,
    "capsudod.8": command_line_options,
    "capsudod-pwauth.8": pwauth_options,
    "capsudo-proxy.8": proxy_options,
    "capsudoctl.8": lambda: GLOBAL_OPTIONS,
}
SECTIONS = ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "ENVIRONMENT", "EXIT STATUS", "EXAMPLES",
            "SEE ALSO", "SECURITY CONSIDERATIONS")
MACRO = re.compile(r"^[A-Z][a-z][a-z]?$")
FILE_PAGE = "capsudo.toml.5"
FIELDS_SECTION = "FIELDS OF AN ENDPOINT"
CTL_PAGE = "capsudoctl.8"
CTL_SECTIONS = ("COMMANDS", "FILES")
FILE_SECTIONS = ("NAME", "SYNOPSIS", "DESCRIPTION", FIELDS_SECTION, "RELOADING", "AUDIT", "FILES", "EXAMPLES",
                 "SEE ALSO", "SECURITY CONSIDERATIONS")


def _sections(text: str) -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    lines: list[str] = []
    for line in text.splitlines():
        if line.startswith(".Sh "):
            lines = sections.setdefault(line[4:].strip(), [])
        else:
            lines.append(line)
    return sections


def _flags(line: str) -> set[str]:
    """The flags an mdoc line names with Fl: `Fl S`, `Fl -endpoint`, `Fl fE` (two), `Fl h | V`."""
    flags, in_fl = set(), False
    for token in line.lstrip(".").split():
        if token == "Fl":
            in_fl = True
        elif MACRO.match(token):
            in_fl = False
        elif in_fl and token not in ("|", ",", "(", ")", "[", "]"):
            word = token.rstrip(",")
            if word.startswith("-"):
                flags.add("-" + word)
            else:
                flags.update(f"-{letter}" for letter in word)
    return flags


def _items(lines: list[str]) -> list[tuple[str, str]]:
    """(the .It line, its body) of every list item."""
    items, head, body = [], None, []
    for line in [*lines, ".El"]:
        if line.startswith((".It", ".El", ".Ss", ".Bl")):
            if head is not None:
                items.append((head, " ".join(body)))
            head, body = (line, []) if line.startswith(".It") else (None, [])
        elif head is not None:
            body.append(line)
    return items


def _declared(table, *, help_and_version: bool = True) -> set[str]:
    flags = {"-h", "--help", "-V", "--version"} if help_and_version else set()
    for option in table:
        flags.add(f"--{option.name}")
        flags.update(f"--{alias}" for alias in option.aliases)
        if option.short:
            flags.add(f"-{option.short}")
    return flags


@pytest.mark.parametrize("page", sorted(PAGES))
def test_the_page_lists_exactly_the_commands_options(page):
    table = PAGES[page]()
    sections = _sections((ROOT / "man" / page).read_text())
    assert [name for name in SECTIONS if name not in sections] == []
    listed = set().union(*(_flags(head) for head, _ in _items(sections["OPTIONS"])))
    declared = _declared(table)
    assert sorted(declared - listed) == [], "options of the table missing from the page"
    assert sorted(listed - declared) == [], "options in the page that the table lacks"
    synopsis = set().union(*(_flags(line) for line in sections["SYNOPSIS"]))
    if page == CTL_PAGE:  # a command's options follow it in the synopsis
        declared |= {flag for command in control_commands() for flag in _declared(command.options)}
    assert sorted(synopsis - declared - {"--"}) == []  # -- ends the options
    # Each item names one option, short and long together.
    for head, _ in _items(sections["OPTIONS"]):
        names = _flags(head)
        options = [option for option in table if names & {f"--{option.name}", f"-{option.short}"}]
        assert len(options) <= 1, head
        if options and options[0].short:
            assert {f"-{options[0].short}", f"--{options[0].name}"} <= names, head


@pytest.mark.parametrize("page", sorted(PAGES))
def test_the_page_states_each_limits_default_as_help_does(page):
    table = PAGES[page]()
    items = _items(_sections((ROOT / "man" / page).read_text())["OPTIONS"])
    for option in table:
        if option.kind not in (INTEGER, SECONDS, BYTES) and option.name != "mode":
            continue
        body = next(body for head, body in items if f"--{option.name}" in _flags(head))
        assert f"Default: {option.shown_default()}" in body, option.name


def _subsections(lines: list[str]) -> dict[str, list[str]]:
    """The lines before the first .Ss (under ""), then each .Ss's lines by its title."""
    subsections: dict[str, list[str]] = {"": []}
    current = subsections[""]
    for line in lines:
        if line.startswith(".Ss "):
            current = subsections.setdefault(line[4:].strip(), [])
        else:
            current.append(line)
    return subsections


def test_the_control_page_lists_exactly_the_commands_and_their_options():
    sections = _sections((ROOT / "man" / CTL_PAGE).read_text())
    assert [name for name in CTL_SECTIONS if name not in sections] == []
    parts = _subsections(sections["COMMANDS"])
    listed = [head.split()[2] for head, _ in _items(parts[""])]
    assert [head.split()[1] for head, _ in _items(parts[""])] == ["Cm"] * len(listed)
    assert listed == [command.name for command in control_commands()]
    for command in control_commands():
        title = f"Options of {command.name}"
        if not command.options:
            assert title not in parts, title
            continue
        items = _items(parts[title])
        shown = set().union(*(_flags(head) for head, _ in items))
        declared = _declared(command.options, help_and_version=False)
        assert sorted(declared - shown) == [], f"{command.name}: options missing from the page"
        assert sorted(shown - declared) == [], f"{command.name}: options in the page that it lacks"
        for option in command.options:
            if option.kind in (INTEGER, SECONDS, BYTES) or option.name == "mode":
                body = next(body for head, body in items if f"--{option.name}" in _flags(head))
                if option.shown_default() is not None:
                    assert f"Default: {option.shown_default()}" in body, (command.name, option.name)


def test_every_page_is_clean_under_mandoc_lint():
    if shutil.which("mandoc") is None:
        pytest.skip("mandoc is not installed (apt-get install mandoc)")
    pages = sorted((ROOT / "man").glob("*.[1-8]"))
    assert {page.name for page in pages} >= {*PAGES, FILE_PAGE}
    # Warnings and errors; style notes such as a cross-reference to a page not installed here are not failures.
    result = subprocess.run(["mandoc", "-Tlint", "-W", "warning", *pages], capture_output=True, text=True,
                            timeout=30)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def _field_items() -> dict[str, str]:
    """The field each item of the file page's fields section names (`.It Ic max-sessions Ar integer`), and its body."""
    sections = _sections((ROOT / "man" / FILE_PAGE).read_text())
    assert [name for name in FILE_SECTIONS if name not in sections] == []
    fields = {}
    for head, body in _items(sections[FIELDS_SECTION]):
        words = head.split()
        assert words[:2] == [".It", "Ic"], head
        assert words[2] not in fields, f"{words[2]} is listed twice"
        fields[words[2]] = body
    return fields


def test_the_file_page_lists_exactly_the_fields_the_file_accepts():
    listed = set(_field_items())
    accepted = set(file_fields())
    assert sorted(accepted - listed) == [], "fields the file accepts missing from the page"
    assert sorted(listed - accepted) == [], "fields in the page that the file does not accept"


def test_the_file_page_states_each_limits_default_as_help_does():
    fields = _field_items()
    for option in command_line_options():
        if option.name in fields and (option.kind in (INTEGER, SECONDS, BYTES) or option.name == "mode"):
            assert f"Default: {option.shown_default()}" in fields[option.name], option.name


def test_the_file_pages_example_is_examples_capsudo_toml():
    lines = _sections((ROOT / "man" / FILE_PAGE).read_text())["EXAMPLES"]
    start = lines.index(".Bd -literal -offset indent") + 1
    example = "\n".join(lines[start:lines.index(".Ed", start)]) + "\n"
    assert example == (ROOT / "examples" / "capsudo.toml").read_text()
    assert tomllib.loads(example)["endpoint"]
