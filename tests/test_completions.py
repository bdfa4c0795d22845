"""The shell completions: generated from the option tables, and working in real shells.

The committed files must be what tools/completions.py writes now, so a
changed table cannot leave them behind. Then each shell loads them: bash
completes a flag when Tab is pressed in an interactive bash, and through
the completion function with and without bash-completion; fish completes
through `complete -C`; zsh parses them and compinit registers them.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARE = ROOT / "share" / "completions"
BASH_COMPLETION = Path("/usr/share/bash-completion/bash_completion")


def _generator():
    spec = importlib.util.spec_from_file_location("completions", ROOT / "tools" / "completions.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_committed_completions_are_what_the_tables_generate():
    generated = _generator().rendered()
    committed = {path.relative_to(SHARE): path.read_text() for path in SHARE.rglob("*") if path.is_file()}
    assert sorted(committed) == sorted(generated), "run `python tools/completions.py`"
    stale = [str(path) for path, text in generated.items() if committed[path] != text]
    assert stale == [], "stale completions; run `python tools/completions.py`"


def test_every_option_of_every_table_is_in_every_shells_completion():
    generator = _generator()
    for command in generator.commands():
        files = [SHARE / "bash" / command.name, SHARE / "zsh" / f"_{command.name}",
                 SHARE / "fish" / f"{command.name}.fish"]
        options = [*command.options, *(option for sub in command.subcommands for option in sub.options)]
        for option in options:
            for path in files:
                text = path.read_text()
                long = f"-l {option.name}" if path.suffix == ".fish" else f"--{option.name}"
                assert long in text, (path.name, option.name)
                if option.short:
                    short = f"-s {option.short}" if path.suffix == ".fish" else f"-{option.short}"
                    assert short in text, (path.name, option.short)


def _bash_complete(command: str, words: list[str], preamble: str = "") -> list[str]:
    """COMPREPLY of the command's completion function for `words`, the last one being completed."""
    function = "_" + command.replace("-", "_")
    script = (f'{preamble}source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); '
              f'COMP_LINE="$*"; COMP_POINT=${{#COMP_LINE}}; {function}; printf "%s\\n" "${{COMPREPLY[@]}}"')
    result = subprocess.run(["bash", "--norc", "--noprofile", "-c", script, "bash", SHARE / "bash" / command,
                             command, *words], capture_output=True, text=True, timeout=10)
    # Called outside Tab, bash-completion's compopt says so; anything else is an error.
    errors = [line for line in result.stderr.splitlines() if "compopt: not currently executing" not in line]
    assert result.returncode == 0 and errors == [], result.stderr
    return [line for line in result.stdout.splitlines() if line]


@pytest.mark.parametrize("with_bash_completion", [False, True], ids=["plain", "bash-completion"])
def test_bash_completes_flags_values_and_the_program(with_bash_completion, tmp_path):
    preamble = ""
    if with_bash_completion:
        if not BASH_COMPLETION.exists():
            pytest.skip("bash-completion is not installed (apt-get install bash-completion)")
        preamble = f"source {BASH_COMPLETION}; "
    (tmp_path / "daemon.pem").write_text("")
    assert _bash_complete("capsudod", ["--max-s"], preamble) == ["--max-sessions", "--max-sessions-per-peer"]
    assert _bash_complete("capsudo", ["-"], preamble)[:2] == ["-S", "--endpoint"]
    # A value: a file for --tls-cert, even after a cluster that ends in a value-taking letter.
    cert = str(tmp_path / "daemon.p")
    assert _bash_complete("capsudod", ["-fES", "/run/x", "--tls-cert", cert], preamble) == [cert + "em"]
    assert _bash_complete("capsudod", ["-o", "roo"], preamble) == ["root"]
    assert _bash_complete("capsudod-pwauth", ["--service", "capsud"], preamble) == (
        ["capsudo"] if Path("/etc/pam.d/capsudo").exists() else [])
    # Once the program has started, its words are not capsudod's options.
    assert "--max-sessions" not in _bash_complete("capsudod", ["-f", "--", "ls", "--max-s"], preamble)
    assert "bash" in _bash_complete("capsudo", ["-S", "/run/capsudo/x", "bas"], preamble)
    # capsudoctl: a command's name, then its operands, its options, and grant's program after --.
    assert _bash_complete("capsudoctl", ["gr"], preamble) == ["grant"]
    assert _bash_complete("capsudoctl", ["-S", "/run/x", "re"], preamble) == ["renew", "revoke", "requests"]
    assert _bash_complete("capsudoctl", ["grant", "--fo"], preamble) == []  # NAME comes first
    assert _bash_complete("capsudoctl", ["grant", "x", "--fo"], preamble) == ["--for"]
    assert _bash_complete("capsudoctl", ["renew", "x", "--u"], preamble) == ["--uses"]
    assert "--for" not in _bash_complete("capsudoctl", ["grant", "x", "-f", "--", "ls", "--fo"], preamble)
    assert "bash" in _bash_complete("capsudoctl", ["grant", "x", "--listen", "/x", "--", "bas"], preamble)


def test_tab_in_an_interactive_bash_completes_a_flag():
    bash = pexpect.spawn("bash", ["--norc", "--noprofile", "-i"], encoding="utf-8", timeout=10,
                         env={"PATH": os.environ["PATH"], "PS1": "$ ", "TERM": "dumb", "HOME": "/"})
    try:
        bash.expect_exact("$ ")
        bash.sendline(f"source {SHARE / 'bash' / 'capsudod'}")
        bash.expect_exact("$ ")
        bash.send("capsudod --allow-un\t")
        bash.expect_exact("capsudod --allow-unsafe-directory ")
        bash.sendcontrol("c")
        bash.expect_exact("$ ")
    finally:
        bash.close(force=True)


def test_fish_completes_flags_and_values():
    if shutil.which("fish") is None:
        pytest.skip("fish is not installed (apt-get install fish)")
    for path in sorted((SHARE / "fish").iterdir()):
        check = subprocess.run(["fish", "--no-execute", path], capture_output=True, text=True, timeout=10)
        assert check.returncode == 0, check.stderr

    def complete(command: str, line: str) -> list[str]:
        result = subprocess.run(["fish", "--no-config", "-c", f"source {SHARE / 'fish' / command}.fish; "
                                 f"complete -C {line!r}"], capture_output=True, text=True, timeout=10)
        assert result.returncode == 0, result.stderr
        return [entry.split("\t")[0] for entry in result.stdout.splitlines()]

    assert complete("capsudod", "capsudod --max-s") == ["--max-sessions", "--max-sessions-per-peer"]
    assert complete("capsudod", "capsudod -o roo") == ["root"]
    assert complete("capsudo-proxy", "capsudo-proxy --stdio --max-hands") == ["--max-handshakes",
                                                                                "--max-handshakes-per-peer"]
    assert "--max-sessions" not in complete("capsudod", "capsudod -- ls --max-s")
    assert complete("capsudoctl", "capsudoctl gr") == ["grant"]
    assert complete("capsudoctl", "capsudoctl grant x --fo") == ["--for"]


def test_zsh_parses_the_completions_and_compinit_registers_them(tmp_path):
    if shutil.which("zsh") is None:
        pytest.skip("zsh is not installed (apt-get install zsh)")
    for path in sorted((SHARE / "zsh").iterdir()):
        check = subprocess.run(["zsh", "-n", path], capture_output=True, text=True, timeout=10)
        assert check.returncode == 0, check.stderr
    script = (f"fpath=({SHARE / 'zsh'} $fpath); autoload -U compinit; compinit -u -d {tmp_path}/zcompdump; "
              "print -r -- $_comps[capsudo] $_comps[capsudod] $_comps[capsudod-pwauth] $_comps[capsudo-proxy] "
              "$_comps[capsudoctl]")
    result = subprocess.run(["zsh", "-f", "-c", script], capture_output=True, text=True, timeout=20,
                            env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)})
    assert result.stdout.split() == ["_capsudo", "_capsudod", "_capsudod-pwauth", "_capsudo-proxy",
                                      "_capsudoctl"], result.stderr
