"""The ssh:// carrier: a multiplexed channel over the system's ssh.

Connecting to ssh://[USER@]HOST[:PORT]/PATH runs

    ssh [$CAPSUDO_SSH options] -T -o BatchMode=yes [-p PORT] [-l USER] -- HOST \
        capsudo-proxy --stdio unix:///PATH

and speaks the multiplexed channel (dialing) over ssh's stdin and stdout.
On the far side the proxy serves that one session as the accepting side and
forwards it to the Unix endpoint at PATH there, so ssh authenticates and
carries the session and nothing new has to listen on the network.

- CAPSUDO_SSH is the ssh command line, split like a shell would (default
  `ssh`), e.g. `ssh -F ~/.ssh/capsudo_config -i ~/.ssh/id_capsudo`. Its
  options come before ours, and since ssh keeps the first value it is given
  for an option, they win: `-o BatchMode=no` there undoes ours.
- CAPSUDO_REMOTE_PROXY is the command the far side runs (default
  `capsudo-proxy`), as a command line for the remote user's shell, e.g.
  `/opt/capsudo/bin/capsudo-proxy`.

ssh runs in a session of its own, without the caller's terminal: it cannot
prompt (hence BatchMode), and a Ctrl-C meant for the session does not kill
the link. Its stderr goes to an unlinked temporary file; when the link ends
without an outcome and ssh failed, the last line it wrote becomes the error
(`ssh://host/path: ssh exited with status 255: Permission denied (publickey).`).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from collections.abc import Sequence

import trio

from capsudo.proto import Message, ProtocolError

from ._channel import MessageChannel, Received
from ._errors import EndpointError
from ._mux_channel import MuxChannel

SSH_COMMAND_VARIABLE = "CAPSUDO_SSH"
REMOTE_PROXY_VARIABLE = "CAPSUDO_REMOTE_PROXY"
DEFAULT_SSH_COMMAND = "ssh"
DEFAULT_REMOTE_PROXY = "capsudo-proxy"

#: How long ssh may take to exit once its link has ended, before it is killed.
SSH_EXIT_WAIT = 5.0
#: How much of the end of ssh's stderr is kept for an error message.
STDERR_TAIL = 4096


def ssh_command_line(endpoint, environ: dict[str, str] | None = None) -> list[str]:
    """The argv that reaches `endpoint` (an SshEndpoint). Raises EndpointError for a bad CAPSUDO_SSH."""
    environ = os.environ if environ is None else environ
    try:
        ssh = shlex.split(environ.get(SSH_COMMAND_VARIABLE) or DEFAULT_SSH_COMMAND)
    except ValueError as exc:
        raise EndpointError(f"cannot connect to {endpoint}: {SSH_COMMAND_VARIABLE} cannot be split: {exc}") from None
    if not ssh:
        ssh = [DEFAULT_SSH_COMMAND]
    remote_proxy = (environ.get(REMOTE_PROXY_VARIABLE) or DEFAULT_REMOTE_PROXY).strip()
    argv = [*ssh, "-T", "-o", "BatchMode=yes"]
    if endpoint.port is not None:
        argv += ["-p", str(endpoint.port)]
    if endpoint.user:
        argv += ["-l", endpoint.user]
    # ssh hands the command to the remote user's shell as one string: the
    # path is quoted for it, the proxy's command line is the caller's to spell.
    remote = f"{remote_proxy} --stdio {shlex.quote('unix://' + endpoint.path)}"
    return [*argv, "--", endpoint.host, remote]


def _last_line(path_file) -> str:
    try:
        size = os.fstat(path_file.fileno()).st_size
        path_file.seek(max(0, size - STDERR_TAIL))
        text = path_file.read().decode("utf-8", "replace")
    except (OSError, ValueError):
        return ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


class SshUnreached(trio.BrokenResourceError):
    """ssh failed before the far end said a word: the daemon was never reached."""

    before_connecting = True


class SshChannel(MessageChannel):
    """A dialing MuxChannel over an ssh process; ssh's failures become one-line errors."""

    def __init__(self, endpoint, process: trio.Process, stderr_file, **channel_options) -> None:
        self.endpoint = endpoint
        self.process = process
        self._stderr = stderr_file
        self.description = f"ssh {endpoint}"
        link = trio.StapledStream(process.stdin, process.stdout)
        self.mux = MuxChannel(link, "dialing", description=self.description, **channel_options)
        self._closed = False
        # Until a message arrives, a failed ssh means the daemon was never reached.
        self._heard = False

    async def _ssh_failure(self) -> str | None:
        """Why ssh failed, once it has exited; None when it is still running or exited 0."""
        with trio.move_on_after(SSH_EXIT_WAIT):
            await self.process.wait()
        status = self.process.returncode
        if status is None or status == 0:
            return None
        how = f"killed by signal {-status}" if status < 0 else f"exited with status {status}"
        detail = _last_line(self._stderr)
        where = f"{self.endpoint}" if self._heard else f"cannot connect to {self.endpoint}"
        message = f"{where}: ssh {how}" + (f": {detail}" if detail else "")
        if status == 127:
            # The remote shell found no such command, most likely the proxy.
            message += f" (is capsudo-proxy installed there? {REMOTE_PROXY_VARIABLE} names it)"
        return message

    async def send(self, message: Message, fds: Sequence[int] = (), **options) -> None:
        try:
            await self.mux.send(message, fds, **options)
        except (trio.BrokenResourceError, OSError) as exc:
            failure = await self._ssh_failure()
            if failure is None:
                raise
            raise self._broken(failure) from exc

    def _broken(self, failure: str) -> trio.BrokenResourceError:
        return trio.BrokenResourceError(failure) if self._heard else SshUnreached(failure)

    async def receive(self) -> Received | None:
        try:
            received = await self.mux.receive()
        except (trio.BrokenResourceError, ProtocolError) as exc:
            # Garbage on ssh's stdout usually means a login banner or shell
            # noise, and a broken link a dead ssh: say what ssh said if it failed.
            failure = await self._ssh_failure()
            if failure is None:
                raise
            raise self._broken(failure) from exc
        if received is None:
            failure = await self._ssh_failure()
            if failure is not None:
                raise self._broken(failure)
        else:
            self._heard = True
        return received

    async def aclose(self) -> None:
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        try:
            await self.mux.aclose()
        finally:
            with trio.CancelScope(shield=True):
                with trio.move_on_after(SSH_EXIT_WAIT):
                    await self.process.wait()
                if self.process.returncode is None:
                    self.process.kill()
                    await self.process.wait()
                self._stderr.close()


async def connect_ssh(endpoint, **channel_options) -> SshChannel:
    """Start ssh for `endpoint` and return the session's channel over it."""
    argv = ssh_command_line(endpoint)
    stderr_file = tempfile.TemporaryFile(prefix="capsudo-ssh-")
    try:
        process = await trio.lowlevel.open_process(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr_file.fileno(),
            start_new_session=True,
        )
    except OSError as exc:
        stderr_file.close()
        reason = exc.strerror or str(exc)
        raise EndpointError(f"cannot connect to {endpoint}: cannot run {argv[0]}: {reason}") from None
    return SshChannel(endpoint, process, stderr_file, **channel_options)
