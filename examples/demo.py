"""make demo: a capability daemon on a private socket, used for real, then stopped.

Runs as the current user: the daemon delegates what this user may already do,
which is enough to see every part work.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
CAPSUDO, CAPSUDOD = str(BIN / "capsudo"), str(BIN / "capsudod")


def show(title: str) -> None:
    print(f"\n\033[1m== {title}\033[0m")


def run(*argv: str, input: bytes | None = None) -> int:
    print("$ " + shlex.join(os.path.basename(a) if a in (CAPSUDO, CAPSUDOD) else a for a in argv))
    sys.stdout.flush()
    status = subprocess.run(argv, input=input).returncode
    print(f"  -> exit status {status}")
    return status


def start(*argv: str) -> subprocess.Popen:
    print("$ " + shlex.join(os.path.basename(a) if a == CAPSUDOD else a for a in argv) + " &")
    daemon = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    path = argv[argv.index("-S") + 1]
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

        show("Stopping: SIGTERM hangs up running programs and removes the sockets")
        for process in (narrow, daemon):
            process.send_signal(signal.SIGTERM)
            process.wait(10)
        print(f"  sockets left: {sorted(os.listdir(directory)) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
