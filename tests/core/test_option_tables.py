"""The option tables: each command's -h, parser and configuration fields come from one declaration."""

import subprocess
import sys
from pathlib import Path

import pytest

from capsudo.client._cli import OPTIONS as CLIENT_OPTIONS
from capsudo.core import (ConnectionLimits, SessionLimits, UsageError, build_config,
                          config_fields, daemon_options, read_command_line)
from capsudo.proto import __version__
from capsudo.proxy._settings import proxy_options
from capsudo.pwauth._cli import pwauth_options
from capsudo.transport import ChannelLimits

BIN = Path(sys.executable).parent
TABLES = {
    "capsudo": CLIENT_OPTIONS,
    "capsudod": daemon_options(),
    "capsudo-proxy": proxy_options(),
    "capsudod-pwauth": pwauth_options(),
}


def _run(command, *args):
    return subprocess.run([str(BIN / command), *args], capture_output=True, text=True, timeout=30,
                          stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("command", TABLES)
def test_help_lists_every_option_with_its_default(command):
    result = _run(command, "-h")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())  # the help is wrapped; compare words
    for option in TABLES[command]:
        assert f"--{option.name}" in text, option
        if option.short:
            assert f"-{option.short}, --{option.name}" in text, option
        default = option.shown_default()
        if default is not None:
            assert f"(default: {default})" in text, option


def test_the_defaults_in_help_are_those_of_the_limits():
    text = " ".join(_run("capsudod", "-h").stdout.split())
    assert f"--max-sessions N connections served at once (default: {ConnectionLimits().max_sessions})" in text
    assert f"(default: {SessionLimits().handshake_timeout:g}s)" in text
    assert f"(default: {ChannelLimits().stream_buffer_limit})" in text
    assert "(default: 256)" in " ".join(_run("capsudo-proxy", "-h").stdout.split())


@pytest.mark.parametrize("command", TABLES)
@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version_on_every_command(command, flag):
    result = _run(command, flag)
    assert (result.returncode, result.stdout, result.stderr) == (0, f"{command} {__version__}\n", "")


@pytest.mark.parametrize("command, args, message", [
    ("capsudo", ["--max-sessions", "1"], "unknown option --max-sessions"),
    ("capsudod", ["-S", "/tmp/x", "--max-sessions", "none"], "--max-sessions takes a number, got 'none'"),
    ("capsudod", ["-S", "tcp://127.0.0.1:0", "--stream-buffer", "0"],
     "--stream-buffer must be a finite number of at least 1, got '0'"),
    ("capsudo-proxy", ["--stdio", "--handshake-timeout", "soon", "/tmp/t"], "--handshake-timeout takes a number"),
    ("capsudod-pwauth", ["-S", "/tmp/x", "--max-clients", "-1"], "--max-clients must be a finite number"),
    ("capsudod-pwauth", ["-S", "/tmp/x", "-Z"], "unknown option -Z"),
])
def test_a_wrong_value_or_option_is_one_line_naming_it(command, args, message):
    result = _run(command, *args)
    assert result.returncode == 2
    assert result.stderr.startswith(f"{command}: error: ")
    assert message in result.stderr
    assert result.stderr.endswith(f"(see {command} -h)\n") and result.stderr.count("\n") == 1


@pytest.mark.parametrize("command, args, message", [
    ("capsudo", ["-i", "-n", "true"], "-i and -n cannot be given together"),
    ("capsudo", ["-n", "--interactive", "true"], "-n and --interactive cannot be given together"),
    ("capsudo-proxy", ["-S", "/tmp/l", "--stdio", "/tmp/t"], "-S and --stdio cannot be given together"),
])
def test_conflicting_flags_are_usage_errors(command, args, message):
    result = _run(command, *args)
    assert result.returncode == 2
    assert result.stderr == f"{command}: error: {message} (see {command} -h)\n"


def _from_argv(argv):
    values, labels, program = read_command_line(daemon_options(), argv)
    if program:
        values["program"] = program
    return build_config(values, labels)


def test_toml_values_build_the_same_config_as_the_command_line():
    argv = ["-S", "tcp://127.0.0.1:0", "-f", "-e", "A=1", "-e", "B=2", "--max-sessions", "9",
            "--handshake-timeout", "2m", "--max-bytes", "64K", "--hangup-grace", "500ms", "--max-frame", "1M",
            "--stream-buffer", "65536", "--", "/bin/echo", "hi"]
    toml = {"endpoint": "tcp://127.0.0.1:0", "fixed-arguments": True, "env": ["A=1", "B=2"], "max-sessions": 9,
            "handshake-timeout": 120, "max-bytes": "64K", "hangup-grace": 0.5, "max-frame": 1 << 20,
            "stream-buffer": "64KiB", "program": ["/bin/echo", "hi"]}
    config = build_config(toml)
    assert config == _from_argv(argv)
    assert config.connection_limits.max_sessions == 9
    assert config.session_limits.handshake_timeout == 120.0
    assert config.session_limits.max_bytes == 65536
    assert config.channel_limits == ChannelLimits(1 << 20, 65536)
    assert config.policy.program == ("/bin/echo", "hi") and config.policy.fixed_arguments


def test_a_toml_mode_may_be_an_octal_number():
    assert build_config({"endpoint": "/tmp/s", "mode": 0o750}).mode == 0o750 == _from_argv(["-S", "/tmp/s", "-m", "750"]).mode


@pytest.mark.parametrize("values, message", [
    ({"max-sessions": "many"}, "max-sessions takes a number, got 'many'"),
    ({"max-sessions": True}, "max-sessions takes a number, got True"),
    ({"fixed-environment": "yes"}, "fixed-environment takes true or false, got 'yes'"),
    ({"env": "A"}, "env takes KEY=VALUE, got 'A'"),
    ({"endpoint": "tcp://127.0.0.1:0", "mode": "0700"}, "mode applies only to a Unix socket"),
    ({"tls-cert": "x"}, "tls-cert needs endpoint"),
])
def test_build_config_names_the_field_in_one_line(values, message):
    with pytest.raises(UsageError) as caught:
        build_config(values)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_an_unknown_field_is_refused_with_the_valid_ones():
    with pytest.raises(UsageError) as caught:
        build_config({"max-session": 3})
    assert "unknown field 'max-session'" in str(caught.value)
    assert "max-sessions" in str(caught.value)
    assert set(config_fields()) == {option.name for option in daemon_options()} | {"program"}
