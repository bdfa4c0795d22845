"""A private sshd for tests: its own host key, user key, config and known_hosts, on a loopback port.

Nothing of the machine's own ssh set-up is read or changed: sshd runs with
`-f` on a config in a temporary directory, and the client gets an `ssh -F`
config that trusts only this sshd's host key and offers only this key.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd")


def find_sshd() -> str | None:
    for candidate in SSHD_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("sshd")
    return os.path.abspath(found) if found else None


def _free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "capsudo-test", "-f", str(path)],
                   check=True, capture_output=True)


@dataclass
class Sshd:
    directory: Path
    port: int
    process: subprocess.Popen
    client_config: Path

    @property
    def log_path(self) -> Path:
        return self.directory / "sshd.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def ssh_command(self) -> str:
        """A value for CAPSUDO_SSH that reaches this sshd, and only it, without prompting."""
        return f"ssh -F {self.client_config}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_sshd(directory: Path, user: str = "root") -> Sshd:
    """Start sshd on 127.0.0.1; raise RuntimeError with its log when it does not come up."""
    sshd = find_sshd()
    if sshd is None:
        raise FileNotFoundError("sshd is not installed")
    directory.mkdir(parents=True, exist_ok=True)
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # its privilege-separation directory
    host_key, user_key = directory / "host_key", directory / "user_key"
    _keygen(host_key)
    _keygen(user_key)
    authorized = directory / "authorized_keys"
    authorized.write_text((directory / "user_key.pub").read_text())
    authorized.chmod(0o600)
    last_error = ""
    for _attempt in range(3):
        port = _free_loopback_port()
        config = directory / "sshd_config"
        config.write_text(
            f"Port {port}\n"
            "ListenAddress 127.0.0.1\n"
            f"HostKey {host_key}\n"
            f"AuthorizedKeysFile {authorized}\n"
            f"PidFile {directory / 'sshd.pid'}\n"
            f"AllowUsers {user}\n"
            "PubkeyAuthentication yes\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "PermitRootLogin prohibit-password\n"
            "UsePAM no\n"
            # The temporary directory's parents are not root-owned 0755 all the way up.
            "StrictModes no\n"
            "LogLevel VERBOSE\n"
        )
        known_hosts = directory / "known_hosts"
        known_hosts.write_text(f"[127.0.0.1]:{port} {(directory / 'host_key.pub').read_text()}")
        client_config = directory / "ssh_config"
        client_config.write_text(
            "Host *\n"
            "  HostName 127.0.0.1\n"
            f"  Port {port}\n"
            f"  User {user}\n"
            f"  IdentityFile {user_key}\n"
            "  IdentitiesOnly yes\n"
            "  IdentityAgent none\n"
            f"  UserKnownHostsFile {known_hosts}\n"
            "  GlobalKnownHostsFile /dev/null\n"
            "  StrictHostKeyChecking yes\n"
            "  ConnectTimeout 20\n"
            "  LogLevel ERROR\n"
        )
        log = open(directory / "sshd.log", "wb")
        process = subprocess.Popen([sshd, "-D", "-e", "-f", str(config)], stdin=subprocess.DEVNULL,
                                   stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and process.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return Sshd(directory, port, process, client_config)
            except OSError:
                time.sleep(0.05)
        if process.poll() is None:
            process.kill()
        process.wait()
        last_error = (directory / "sshd.log").read_text(errors="replace")
    raise RuntimeError(f"sshd did not start: {last_error.strip()}")
