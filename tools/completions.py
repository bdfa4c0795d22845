"""Shell completions for bash, zsh and fish, written from the commands' option tables.

Each command's options are declared once (`Option` tables); this writes
`share/completions/{bash,zsh,fish}/` from them, so a new option completes
without anyone editing a shell script. The generated files are committed;
tests/test_completions.py regenerates them and fails on any difference.
What an option's value completes to is decided here, from its name and
metavar: files for FILE and for an endpoint (a socket path), users (and
groups after a colon) for an owner, PAM services for --service, nothing
for numbers, durations and sizes. After the options come a program and its
arguments, or, for capsudo-proxy, one TARGET endpoint, or, for capsudoctl,
one of its commands, that command's operands and options (the program
after those of `grant`).

Run `python tools/completions.py` after changing a table.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "share" / "completions"

# What a value completes to.
FILES, OWNER, PAM_SERVICE, NOTHING = "files", "owner", "pam-service", "nothing"
# What the operands are.
PROGRAM, ENDPOINT, SUBCOMMAND = "program", "endpoint", "subcommand"


@dataclass(frozen=True)
class Command:
    name: str
    options: list  # of capsudo.core.Option
    operands: str  # PROGRAM, ENDPOINT or SUBCOMMAND
    subcommands: tuple = ()  # of capsudo.ctl._cli.Command, for SUBCOMMAND


def commands() -> list[Command]:
    from capsudo.client._cli import OPTIONS
    from capsudo.ctl._cli import GLOBAL_OPTIONS, control_commands
    from capsudo.daemon._cli import command_line_options
    from capsudo.proxy._settings import proxy_options
    from capsudo.pwauth._cli import pwauth_options

    return [
        Command("capsudo", OPTIONS, PROGRAM),
        Command("capsudod", command_line_options(), PROGRAM),
        Command("capsudod-pwauth", pwauth_options(), PROGRAM),
        Command("capsudo-proxy", proxy_options(), ENDPOINT),
        Command("capsudoctl", GLOBAL_OPTIONS, SUBCOMMAND, tuple(control_commands())),
    ]


def value_kind(option) -> str:
    if not option.takes_value:
        raise ValueError(f"--{option.name} takes no value")
    if option.metavar == "FILE" or option.name in ("endpoint", "control"):
        return FILES
    if option.name == "owner":
        return OWNER
    if option.name == "service":
        return PAM_SERVICE
    return NOTHING


def summary(option) -> str:
    """The help's first clause: what a completion menu has room for."""
    text = option.help
    for stop in (": ", "; ", " ("):
        text = text.split(stop, 1)[0]
    return text


@dataclass(frozen=True)
class Spelling:
    """One way to write an option: its short letter (or None), a long name, the option."""

    short: str | None
    long: str
    option: object


def spellings(command: Command) -> list[Spelling]:
    from capsudo.core import Option

    return _spellings([*command.options, Option("help", help="show this help", short="h"),
                       Option("version", help="show the version", short="V")])


def _spellings(table) -> list[Spelling]:
    found = []
    for option in table:
        found.append(Spelling(option.short, option.name, option))
        found.extend(Spelling(None, alias, option) for alias in option.aliases)
    return found


def _words(spelling: Spelling) -> list[str]:
    return [*([f"-{spelling.short}"] if spelling.short else []), f"--{spelling.long}"]


# ---- bash --------------------------------------------------------------------

BASH_SHARED = r"""
# Shared by the capsudo commands' completions (each file defines them alike).
__capsudo_files()
{
    compopt -o filenames 2>/dev/null
    COMPREPLY=($(compgen -f -- "$1"))
}

__capsudo_owner()
{
    if [[ $1 == *:* ]]; then
        COMPREPLY=($(compgen -g -P "${1%%:*}:" -- "${1#*:}"))
    else
        COMPREPLY=($(compgen -u -- "$1"))
    fi
    # bash-completion's words keep USER:GROUP whole; bash replaces only after the colon.
    if declare -F __ltrim_colon_completions >/dev/null; then
        __ltrim_colon_completions "$1"
    fi
}

__capsudo_pam_service()
{
    COMPREPLY=($(compgen -W "$(command ls /etc/pam.d 2>/dev/null)" -- "$1"))
}

# The program at word $1 and its arguments: bash-completion's own completion
# for that program when it is loaded, else commands and then files.
__capsudo_program()
{
    if declare -F _command_offset >/dev/null; then
        _command_offset "$1"
    elif (($1 == COMP_CWORD)); then
        COMPREPLY=($(compgen -c -- "${COMP_WORDS[COMP_CWORD]}"))
    else
        __capsudo_files "${COMP_WORDS[COMP_CWORD]}"
    fi
}
""".lstrip("\n")

_BASH_VALUE = {FILES: "__capsudo_files", OWNER: "__capsudo_owner", PAM_SERVICE: "__capsudo_pam_service"}


_BASH_INIT = """\
    local cur prev words cword
    if declare -F _init_completion >/dev/null; then
        _init_completion -n := || return
    else
        words=("${COMP_WORDS[@]}") cword=$COMP_CWORD
        cur=${words[cword]} prev=${words[cword - 1]}
    fi
"""


def _bash_options(spelled: list[Spelling], operands: str, start: str, begun: str | None = None) -> str:
    """The lines that complete options from word `start` on, then `operands`; `begun` (by default
    `operands` too) once a word before the one completed has ended the options, at word $i."""
    all_words = " ".join(word for spelling in spelled for word in _words(spelling))
    valued = [spelling for spelling in spelled if spelling.option.takes_value]
    valued_words = "|".join(word for spelling in valued for word in _words(spelling))
    valued_letters = "".join(spelling.short for spelling in valued if spelling.short)
    value_cases = []
    for kind in (FILES, OWNER, PAM_SERVICE, NOTHING):
        words = "|".join(word for spelling in valued if value_kind(spelling.option) == kind
                         for word in _words(spelling))
        if words:
            action = f'{_BASH_VALUE[kind]} "$cur"' if kind in _BASH_VALUE else "COMPREPLY=()"
            value_cases.append(f"        {words})\n            {action}\n            return\n            ;;")
    cases = "\n".join(value_cases)
    return f"""\
    # Find where the operands start: options end at the first other word or at --.
    local i word rest
    for ((i = {start}; i < cword; i++)); do
        word=${{words[i]}}
        case $word in
            --) ((i++)); break ;;
            {valued_words}) ((i++)) ;;
            --*) ;;
            -?*)
                # A cluster such as -fES: a letter that takes a value ends it,
                # and the value is the rest of the word or else the next word.
                rest=${{word#-}}
                while [[ -n $rest ]]; do
                    if [[ {valued_letters!r} == *"${{rest:0:1}}"* ]]; then
                        [[ -z ${{rest:1}} ]] && ((i++))
                        break
                    fi
                    rest=${{rest:1}}
                done
                ;;
            *) break ;;
        esac
    done
    if ((i < cword)); then
        {begun or operands}
        return
    fi
    case $prev in
{cases}
    esac
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "{all_words}" -- "$cur"))
        return
    fi
    {operands}
"""


def _bash_header(command: Command) -> str:
    return f"""\
# bash completion for {command.name}. Generated by tools/completions.py from
# the command's option table: edit the table, not this file.

{BASH_SHARED}"""


def bash(command: Command) -> str:
    if command.operands == SUBCOMMAND:
        return _bash_with_subcommands(command)
    function = "_" + command.name.replace("-", "_")
    operands = ('__capsudo_program "$i"' if command.operands == PROGRAM else '__capsudo_files "$cur"')
    return f"""\
{_bash_header(command)}
{function}()
{{
{_BASH_INIT}{_bash_options(spellings(command), operands, "1")}}} &&
    complete -F {function} {command.name}
"""


def _bash_with_subcommands(command: Command) -> str:
    """The global options, a command's name, then that command's operands and options."""
    function = "_" + command.name.replace("-", "_")
    parts = [_bash_header(command)]
    dispatch = []
    for sub in command.subcommands:
        if not sub.options:
            continue
        helper = f"_{function}_{sub.name}"
        # $1: the word after the command's name; its operands come first.
        operands = '__capsudo_program "$i"' if sub.takes_program else "COMPREPLY=()"
        parts.append(f"""\
{helper}()
{{
    if (($1 + {len(sub.operands)} > cword)); then
        COMPREPLY=()
        return
    fi
{_bash_options(_spellings(sub.options), operands, f"$1 + {len(sub.operands)}")}}}
""")
        # Once the command's name is typed, it decides what follows.
        dispatch.append(f"            {sub.name}) {helper} $((i + 1)) ;;")
    names = " ".join(sub.name for sub in command.subcommands)
    dispatch.append("            *) COMPREPLY=() ;;")
    begun = "case ${words[i]} in\n%s\n        esac" % "\n".join(dispatch)
    body = _bash_options(spellings(command), 'COMPREPLY=($(compgen -W "' + names + '" -- "$cur"))', "1", begun)
    parts.append(f"""\
{function}()
{{
{_BASH_INIT}{body}}} &&
    complete -F {function} {command.name}
""")
    return "\n".join(parts)


# ---- zsh ---------------------------------------------------------------------

_ZSH_VALUE = {FILES: "_files", OWNER: "_users", PAM_SERVICE: "_files -W /etc/pam.d", NOTHING: " "}


def _zsh_quote(text: str) -> str:
    """Text inside a single-quoted _arguments spec's [description]."""
    for char in "\\[]:":
        text = text.replace(char, "\\" + char)
    return text.replace("'", "'\\''")


def _zsh_specs(spelled: list[Spelling]) -> list[str]:
    words_of = {}
    for spelling in spelled:
        words_of.setdefault(spelling.option.name, []).extend(_words(spelling))
    specs = []
    for spelling in spelled:
        option = spelling.option
        excluded = [word for other in option.excludes for word in words_of.get(other, [])]
        if option.name in ("help", "version"):
            excluded = ["-", "*"]
        repeatable = option.kind == "list"
        if not repeatable:
            excluded = [*words_of[option.name], *excluded]
        exclusion = f"({' '.join(excluded)})" if excluded else ""
        star = "*" if repeatable else ""
        description = f"[{_zsh_quote(summary(option))}]"
        if option.takes_value:
            value = f":{_zsh_quote(option.metavar.lower())}:{_ZSH_VALUE[value_kind(option)]}"
            names = ([f"-{spelling.short}+"] if spelling.short else []) + [f"--{spelling.long}="]
        else:
            value = ""
            names = _words(spelling)
        for name in names:
            specs.append(f"'{exclusion}{star}{name}{description}{value}'")
    return specs


def zsh(command: Command) -> str:
    if command.operands == SUBCOMMAND:
        return _zsh_with_subcommands(command)
    specs = _zsh_specs(spellings(command))
    if command.operands == PROGRAM:
        specs += ["'1:program:_command_names -e'", "'*::arguments:_normal'"]
    else:
        specs += ["'1:target endpoint:_files'"]
    lines = " \\\n    ".join(specs)
    return f"""\
#compdef {command.name}
# zsh completion for {command.name}. Generated by tools/completions.py from
# the command's option table: edit the table, not this file.

_arguments -s -S \\
    {lines}
"""


def _zsh_with_subcommands(command: Command) -> str:
    """The global options and a command's name; then, by that name, its operands and options."""
    names = " ".join(f"{sub.name}\\:\"{_zsh_quote(sub.help)}\"" for sub in command.subcommands)
    specs = [*_zsh_specs(spellings(command)), f"'1:command:(({names}))'", "'*::argument:->command'"]
    cases = []
    for sub in command.subcommands:
        if not sub.options:
            continue
        own = [f"'{place}:{operand.lower()}: '" for place, operand in enumerate(sub.operands, 1)]
        own += _zsh_specs(_spellings(sub.options))
        if sub.takes_program:
            own += [f"'{len(sub.operands) + 1}:program:_command_names -e'", "'*::arguments:_normal'"]
        lines = " \\\n            ".join(own)
        cases.append(f"    {sub.name})\n        _arguments -s -S \\\n            {lines}\n        ;;")
    global_lines = " \\\n    ".join(specs)
    case_lines = "\n".join(cases)
    return f"""\
#compdef {command.name}
# zsh completion for {command.name}. Generated by tools/completions.py from
# the command's option table: edit the table, not this file.

local curcontext=$curcontext state state_descr line
typeset -A opt_args
_arguments -s -S -C \\
    {global_lines}
[[ $state == command ]] || return
case $words[1] in
{case_lines}
esac
"""


# ---- fish --------------------------------------------------------------------

_FISH_VALUE = {FILES: "-r -F", OWNER: "-x -a '(__fish_complete_users)'",
               PAM_SERVICE: "-x -a '(command ls /etc/pam.d 2>/dev/null)'", NOTHING: "-x"}


def _fish_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def fish(command: Command) -> str:
    if command.operands == SUBCOMMAND:
        return _fish_with_subcommands(command)
    spelled = spellings(command)
    valued = [spelling for spelling in spelled if spelling.option.takes_value]
    # Options end at the first operand: fish asks whether one has been seen.
    letters = "".join(spelling.short for spelling in valued if spelling.short)
    longs = " ".join(spelling.long for spelling in valued)
    guard = f"__{command.name.replace('-', '_')}_in_options"
    lines = [
        f"# fish completion for {command.name}. Generated by tools/completions.py from",
        "# the command's option table: edit the table, not this file.",
        "",
        "# True while the word being completed is still among the options.",
        f"function {guard}",
        "    set -l words (commandline -opc)",
        "    set -e words[1]",
        "    while set -q words[1]",
        "        switch $words[1]",
        "            case --",
        "                return 1",
        "            case '--*=*'",
        "            case '--*'",
        f"                if contains -- (string sub -s 3 -- $words[1]) {longs}",
        "                    set -e words[1]",
        "                end",
        "            case '-?*'",
        f"                set -l letter (string match -r -- '^-[^{letters}]*([{letters}])$' $words[1])",
        "                if set -q letter[2]",
        "                    set -e words[1]",
        "                end",
        "            case '*'",
        "                return 1",
        "        end",
        "        set -e words[1]",
        "    end",
        "end",
        "",
    ]
    head = f"complete -c {command.name} -n {guard}"
    for spelling in spelled:
        option = spelling.option
        names = (f" -s {spelling.short}" if spelling.short else "") + f" -l {spelling.long}"
        value = f" {_FISH_VALUE[value_kind(option)]}" if option.takes_value else ""
        lines.append(f"{head}{names}{value} -d {_fish_quote(summary(option))}")
    if command.operands == PROGRAM:
        lines.append(f"complete -c {command.name} -n '{guard}; and not string match -q -- \"-*\" "
                     f"(commandline -ct)' -x -a '(__fish_complete_command)'")
        lines.append(f"complete -c {command.name} -n 'not {guard}' -x -a '(__fish_complete_subcommand)'")
    else:
        lines.append(f"complete -c {command.name} -n {guard} -F")
    return "\n".join(lines) + "\n"


def _fish_with_subcommands(command: Command) -> str:
    """The global options and a command's name; then that command's options, and grant's program."""
    name = command.name
    current = f"__{name.replace('-', '_')}_command"
    lines = [
        f"# fish completion for {name}. Generated by tools/completions.py from",
        "# the command's option table: edit the table, not this file.",
        "",
        "# The command's name once it is typed (the first word that is no option or -S's value).",
        f"function {current}",
        "    set -l words (commandline -opc)",
        "    set -e words[1]",
        "    while set -q words[1]",
        "        switch $words[1]",
        "            case -S --control",
        "                set -e words[1]",
        "            case '-*'",
        "            case '*'",
        "                echo $words[1]",
        "                return 0",
        "        end",
        "        set -e words[1]",
        "    end",
        "    return 1",
        "end",
        "",
        f"function __{name}_after_dashdash",
        "    contains -- -- (commandline -opc)",
        "end",
        "",
    ]
    for spelling in spellings(command):
        option = spelling.option
        names = (f" -s {spelling.short}" if spelling.short else "") + f" -l {spelling.long}"
        value = f" {_FISH_VALUE[value_kind(option)]}" if option.takes_value else ""
        lines.append(f"complete -c {name} -n 'not {current}'{names}{value} -d {_fish_quote(summary(option))}")
    for sub in command.subcommands:
        lines.append(f"complete -c {name} -n 'not {current}' -f -a {sub.name} -d {_fish_quote(sub.help)}")
    for sub in command.subcommands:
        seen = f"test \"$({current})\" = {sub.name}; and not __{name}_after_dashdash"
        for spelling in _spellings(sub.options):
            option = spelling.option
            names = (f" -s {spelling.short}" if spelling.short else "") + f" -l {spelling.long}"
            value = f" {_FISH_VALUE[value_kind(option)]}" if option.takes_value else ""
            lines.append(f"complete -c {name} -n {_fish_quote(seen)}{names}{value} -d {_fish_quote(summary(option))}")
        if sub.takes_program:
            lines.append(f"complete -c {name} -n '__{name}_after_dashdash' -x -a '(__fish_complete_command)'")
    return "\n".join(lines) + "\n"


# ---- files -------------------------------------------------------------------

FILE_NAMES = {"bash": "{}", "zsh": "_{}", "fish": "{}.fish"}
RENDERERS = {"bash": bash, "zsh": zsh, "fish": fish}


def rendered() -> dict[Path, str]:
    """Every completion file, by its path under share/completions/."""
    files = {}
    for command in commands():
        for shell, render in RENDERERS.items():
            files[Path(shell) / FILE_NAMES[shell].format(command.name)] = render(command)
    return files


def main() -> int:
    for relative, text in rendered().items():
        path = OUTPUT / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
