"""Coverage-guided fuzzing of the decoders and the daemon's handshake (atheris).

    python fuzz/fuzz_decoders.py TARGET [libFuzzer options] [corpus dirs]

TARGET is one of control, frames, handshake (see fuzz_properties.py for what each
checks). Without a corpus directory the target's kept corpus,
fuzz/corpus/TARGET, is used, seeded with a few valid encodings when empty;
whatever new input reaches new code is written there. Only capsudo's own
modules are instrumented, so the coverage figures are ours alone.
"""

from __future__ import annotations

import os
import shlex
import sys

import atheris

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

with atheris.instrument_imports(include=["capsudo"]):
    from capsudo.proto import (Arg, ControlFrame, Direction, End, Env, Error, Exit, Fd, FdsFrame,
                               SessionKind, SessionType, StreamClose, StreamData, Winsize,
                               encode_frame, encode_message)
    from fuzz_properties import TARGETS

# Per input: anything slower than this is reported as a hang.
HANG_SECONDS = 10


def _handshake(*extra) -> bytes:
    return b"".join(
        encode_message(m)
        for m in (Arg("ls"), Arg("-l"), Env("TERM=xterm"), SessionType(SessionKind.INTERACTIVE),
                  Winsize(24, 80), *extra, Fd(3), End())
    )


SEEDS = {
    "control": [_handshake(), encode_message(Exit(0)) + encode_message(Error("refused"))],
    "frames": [
        encode_frame(ControlFrame(Arg("true")))
        + encode_frame(FdsFrame(((1, Direction.READ), (2, Direction.WRITE))))
        + encode_frame(StreamData(1, b"data"))
        + encode_frame(StreamClose(1))
    ],
    "handshake": [_handshake(), _handshake(Env("A=1")), encode_message(Arg("x")) + encode_message(End())],
}


def _seed(directory: str, target: str) -> None:
    os.makedirs(directory, exist_ok=True)
    if os.listdir(directory):
        return
    for number, seed in enumerate(SEEDS[target]):
        with open(os.path.join(directory, f"seed-{number}"), "wb") as out:
            out.write(seed)


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[1] not in TARGETS:
        sys.exit(f"usage: {argv[0]} {{{','.join(TARGETS)}}} [libFuzzer options] [corpus dirs]")
    target = argv[1]
    options = argv[2:]
    if not any(not option.startswith("-") for option in options):
        corpus = os.path.join(HERE, "corpus", target)
        _seed(corpus, target)
        options.append(corpus)
    if not any(option.startswith("-timeout=") for option in options):
        options.insert(0, f"-timeout={HANG_SECONDS}")
    # libFuzzer starts its own helpers (-merge=1, -fork=N) by handing its
    # argv[0] to the shell: that must name the interpreter and the target too.
    launcher = shlex.join([sys.executable, os.path.abspath(argv[0]), target])
    atheris.Setup([launcher, *options], TARGETS[target])
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
