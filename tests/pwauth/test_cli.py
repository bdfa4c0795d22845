"""capsudod-pwauth's command line and its start-up checks."""

import os
import subprocess

import pytest

from capsudo.core import UsageError
from capsudo.pwauth._cli import StartupError, check_service, parse_command_line, resolve_command

from .conftest import PWAUTH


def test_defaults():
    settings = parse_command_line(["-S", "/run/x"])
    assert settings.endpoint == "/run/x"
    assert settings.service == "capsudo"
    assert settings.command == ("capsudod",)
    assert settings.fail_delay == 2.0
    assert (settings.max_failures, settings.failure_window) == (10, 300.0)
    assert settings.mode == 0o770


def test_options_and_the_command_after_them():
    settings = parse_command_line(
        ["-Sunix:///run/x", "-m", "0750", "--service=sudo-like", "--fail-delay", "0.5", "--max-failures", "0",
         "--", "capsudod", "-f", "--", "/sbin/reboot"]
    )
    assert settings.endpoint == "/run/x"
    assert settings.mode == 0o750
    assert settings.service == "sudo-like"
    assert settings.fail_delay == 0.5
    assert settings.max_failures == 0
    assert settings.command == ("capsudod", "-f", "--", "/sbin/reboot")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["-S", "/x", "-q"], "unknown option -q"),
        (["-S", "/x", "--bogus"], "unknown option --bogus"),
        ([], "-S endpoint is required"),
        (["-S", "/x", "--service", "../shadow"], "invalid PAM service name '../shadow'"),
        (["-S", "/x", "--fail-delay", "soon"], "--fail-delay takes a number, got 'soon'"),
        (["-S", "/x", "--max-clients", "0"], "--max-clients must be a finite number of at least 1, got '0'"),
        (["-S", "/x", "--pam-timeout", "nan"], "--pam-timeout must be a finite number of at least 0.001, got 'nan'"),
        (["-S", "/x", "-m", "999"], "invalid mode '999': expected an octal number from 0 to 07777, such as 0770"),
    ],
)
def test_usage_errors(argv, message):
    with pytest.raises(UsageError) as caught:
        parse_command_line(argv)
    assert str(caught.value) == message


def test_an_unknown_option_is_a_one_line_usage_error_with_status_2():
    result = subprocess.run([PWAUTH, "-S", "/tmp/never", "-x"], capture_output=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.decode() == "capsudod-pwauth: error: unknown option -x (see capsudod-pwauth -h)\n"


def test_help():
    result = subprocess.run([PWAUTH, "-h"], capture_output=True, timeout=30)
    assert result.returncode == 0
    assert result.stdout.decode().startswith("usage: capsudod-pwauth -S endpoint")


def test_a_missing_service_file_is_refused(tmp_path):
    with pytest.raises(StartupError) as caught:
        check_service("capsudo", str(tmp_path))
    assert str(caught.value).startswith(f"{tmp_path}/capsudo does not exist, and PAM would fall back")
    (tmp_path / "capsudo").write_text("auth required pam_unix.so\n")
    check_service("capsudo", str(tmp_path))


def test_the_front_end_will_not_start_without_its_service_file(sock_dir):
    path = os.path.join(sock_dir, "auth.sock")
    result = subprocess.run([PWAUTH, "-S", path, "--service", "capsudo-no-such-service"],
                            capture_output=True, timeout=30)
    assert result.returncode == 1
    assert result.stderr.decode() == (
        "capsudod-pwauth: error: /etc/pam.d/capsudo-no-such-service does not exist, and PAM would fall back to "
        "its 'other' service; install examples/pam.d/capsudo there or name another service with --service\n"
    )
    assert not os.path.exists(path)


def test_the_command_is_resolved_at_start_up(tmp_path):
    assert resolve_command("sh") == os.path.abspath(__import__("shutil").which("sh"))
    with pytest.raises(StartupError, match="command not found"):
        resolve_command("no-such-command-anywhere")
    plain = tmp_path / "plain"
    plain.write_text("")
    with pytest.raises(StartupError, match="not an executable file"):
        resolve_command(str(plain))
