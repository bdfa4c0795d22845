"""make demo: capability daemons on private sockets, used for real, then stopped.

One daemon per endpoint from the command line, then one daemon serving a
configuration file's endpoints, asked to describe one, and (as root) a grant
made at run time that expires by itself.

Runs as the current user: the daemon delegates what this user may already do,
which is enough to see every part work.
"""

from __future__ import annotations

import os
import shlex
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
CAPSUDO, CAPSUDOD, CAPSUDOCTL = str(BIN / "capsudo"), str(BIN / "capsudod"), str(BIN / "capsudoctl")
COMMANDS = (CAPSUDO, CAPSUDOD, CAPSUDOCTL)


def show(title: str) -> None:
    print(f"\n\033[1m== {title}\033[0m")


def run(*argv: str, input: bytes | None = None) -> int:
    print("$ " + shlex.join(os.path.basename(a) if a in COMMANDS else a for a in argv))
    sys.stdout.flush()
    status = subprocess.run(argv, input=input).returncode
    print(f"  -> exit status {status}")
    return status


def start(*argv: str, waiting_for: str = "") -> subprocess.Popen:
    print("$ " + shlex.join(os.path.basename(a) if a == CAPSUDOD else a for a in argv) + " &")
    daemon = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    path = argv[argv.index("-S") + 1] if "-S" in argv else waiting_for
    while not os.path.exists(path):
        time.sleep(0.01)
    return daemon


def main() -> int:
    from capsudo.proto import Arg, ControlDecoder, End, Env, Fd, SessionKind, SessionType, encode_message

    show("The wire format: a client's handshake for `capsudo -- id -u`")
    handshake = [Env("LANG=C.UTF-8"), Arg("id"), Arg("-u"), SessionType(SessionKind.NON_INTERACTIVE), Fd(3), End()]
    wire = b"".join(encode_message(m) for m in handshake)
    for message in handshake:
        print(f"  {encode_message(message).hex(' '):<60} {message}")
    decoder = ControlDecoder()
    decoder.feed(wire)
    assert list(decoder.messages()) == handshake
    print(f"  ({len(wire)} bytes; decoded back to the same {len(handshake)} messages)")

    with tempfile.TemporaryDirectory(prefix="capsudo-demo-") as directory:
        broad, pinned = f"{directory}/broad", f"{directory}/uname"
        show("A daemon that delegates running anything (as this user)")
        daemon = start(CAPSUDOD, "-S", broad, "-m", "0700")
        run(CAPSUDO, "-S", broad, "--", "sh", "-c", 'echo "hello from pid $$, session $(cut -d" " -f6 /proc/$$/stat)"')
        run(CAPSUDO, "-S", broad, "--", "sh", "-c", "echo about to fail >&2; exit 3")
        run(CAPSUDO, "-S", broad, "--", "tr", "a-z", "A-Z", input=b"stdin goes through too\n")
        run(CAPSUDO, "-S", broad, "--", "no-such-program")

        show("A pinned endpoint (-f command, -E environment): only `uname -sr`, whatever the client asks")
        narrow = start(CAPSUDOD, "-S", pinned, "-fE", "--", "uname", "-sr")
        run(CAPSUDO, "-S", pinned, "--", "rm", "-rf", "/")

        show("One daemon, many endpoints, from a configuration file")
        config = Path(directory, "capsudo.toml")
        control = "" if os.geteuid() != 0 else (
            f'[control]\nlisten = "{directory}/control"\nstate = "{directory}/state"\n\n')
        config.write_text(control + f"""[defaults]
client-environment = false
mode = "0700"

[endpoint.year]
description = "Print the year"
listen = "{directory}/year"
command = ["date", "+%Y"]
pin = "command"

[endpoint.count]
description = "Count the words of what it is given"
listen = "{directory}/count"
command = ["wc", "-w"]
""")
        print(config.read_text().rstrip("\n"))
        run(CAPSUDOD, "--config", str(config), "--check")
        served = start(CAPSUDOD, "--config", str(config), waiting_for=f"{directory}/count")
        run(CAPSUDO, "-S", f"{directory}/year", "--", "ignored")
        run(CAPSUDO, "-l", "-S", f"{directory}/count")
        run(CAPSUDO, "-S", f"{directory}/count", input=b"three little words\n")
        if control:
            show("A grant made at run time: two uses, or three seconds, whichever comes first")
            run(CAPSUDOCTL, "-S", f"{directory}/control", "grant", "hello", "--listen", f"{directory}/hello",
                "--for", "3s", "--uses", "2", "-fE", "--", "echo", "granted for a moment")
            run(CAPSUDO, "-S", f"{directory}/hello")
            run(CAPSUDOCTL, "-S", f"{directory}/control", "list")
            time.sleep(3.2)
            run(CAPSUDO, "-S", f"{directory}/hello")
        else:
            print("  (grants need root: the control socket answers only root and its group)")

        show("Stopping: SIGTERM hangs up running programs and removes the sockets")
        for process in (served, narrow, daemon):
            process.send_signal(signal.SIGTERM)
            process.wait(10)
        sockets = [name for name in os.listdir(directory) if stat.S_ISSOCK(os.lstat(f"{directory}/{name}").st_mode)]
        print(f"  sockets left: {sorted(sockets) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
