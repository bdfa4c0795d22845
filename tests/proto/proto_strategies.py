"""Hypothesis strategies for every control message and multiplexer frame."""

from __future__ import annotations

from hypothesis import strategies as st

from capsudo.proto import (Arg, ControlFrame, Direction, End, Env, Error, Exit, Fd, FdsFrame, Secret,
                           SessionKind, SessionType, StreamClose, StreamData, Unauthorized, Winsize)

U16 = st.integers(0, 2**16 - 1)
U32 = st.integers(0, 2**32 - 1)
I32 = st.integers(-(2**31), 2**31 - 1)

# Any text that UTF-8 can carry (no lone surrogates).
text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
# Text that may go into execve(): no NUL.
exec_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=40)
env_key = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\0="), min_size=1, max_size=20
)

args = st.builds(Arg, exec_text)
envs = st.builds(lambda k, v: Env(f"{k}={v}"), env_key, exec_text)
exits = st.builds(Exit, I32)
fds = st.builds(Fd, U32)
session_types = st.builds(SessionType, st.sampled_from(SessionKind))
errors = st.builds(Error, text)
secrets_ = st.builds(Secret, st.binary(max_size=64))
unauthorizeds = st.builds(Unauthorized, text)
winsizes = st.builds(Winsize, U16, U16, U16, U16)
ends = st.just(End())

messages = st.one_of(
    args, envs, exits, fds, session_types, errors, secrets_, unauthorizeds, winsizes, ends
)

MESSAGE_STRATEGIES = {
    "Arg": args,
    "Env": envs,
    "Exit": exits,
    "Fd": fds,
    "SessionType": session_types,
    "Error": errors,
    "Secret": secrets_,
    "Unauthorized": unauthorizeds,
    "Winsize": winsizes,
    "End": ends,
}

control_frames = st.builds(ControlFrame, messages)
fds_frames = st.builds(
    FdsFrame, st.lists(st.tuples(U32, st.sampled_from(Direction)), max_size=6).map(tuple)
)
stream_datas = st.builds(StreamData, U32, st.binary(max_size=64))
stream_closes = st.builds(StreamClose, U32)

frames = st.one_of(control_frames, fds_frames, stream_datas, stream_closes)

FRAME_STRATEGIES = {
    "ControlFrame": control_frames,
    "FdsFrame": fds_frames,
    "StreamData": stream_datas,
    "StreamClose": stream_closes,
}
