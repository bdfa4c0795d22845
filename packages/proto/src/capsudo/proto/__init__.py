"""capsudo's wire format: control messages, multiplexer frames, decoders.

Pure data in and out, no I/O and no trio. Names load on first use, so a
one-shot client that needs only `capsudo.proto.lean` never pays for construct.
"""

from __future__ import annotations

# Neither importlib nor typing: every `capsudo` command imports this
# package at start-up, and those two would add milliseconds to it.
TYPE_CHECKING = False

from ._errors import ProtocolError
from ._limits import (DATA_FRAME_SIZE, DEFAULT_EXIT_GRACE, DEFAULT_MAX_FRAME_PAYLOAD, DEFAULT_STREAM_BUFFER,
                      MAX_CONTROL_PAYLOAD)

__all__ = [
    "ProtocolError",
    "MAX_CONTROL_PAYLOAD",
    "DEFAULT_MAX_FRAME_PAYLOAD",
    "DATA_FRAME_SIZE",
    "DEFAULT_STREAM_BUFFER",
    "DEFAULT_EXIT_GRACE",
    # control messages
    "MessageType",
    "SessionKind",
    "Message",
    "Arg",
    "Env",
    "Exit",
    "Fd",
    "SessionType",
    "Error",
    "Secret",
    "Unauthorized",
    "Winsize",
    "End",
    "MESSAGE_CLASSES",
    "encode_message",
    "decode_header",
    "ControlDecoder",
    # the session protocol
    "SessionProtocol",
    "HandshakeLimits",
    "Request",
    "Reason",
    "Refused",
    "reason",
    "NOTE_PREFIX",
    "reason_of",
    "Configured",
    "Resized",
    "Failed",
    "Challenged",
    "Finished",
    "CLIENT",
    "DAEMON",
    "handshake",
    "HandshakeBudget",
    # the describe extension
    "Describe",
    "Description",
    "DescribingProtocol",
    "DescribeAsked",
    "Described",
    "DESCRIBING",
    # multiplexer frames
    "FrameKind",
    "Direction",
    "Frame",
    "ControlFrame",
    "FdsFrame",
    "StreamData",
    "StreamClose",
    "encode_frame",
    "encode_data_header",
    "FrameDecoder",
]

_HOME = {
    "__version__": "._version",
    **dict.fromkeys(
        ["MessageType", "SessionKind", "Message", "Arg", "Env", "Exit", "Fd", "SessionType",
         "Error", "Secret", "Unauthorized", "Winsize", "End", "Describe", "Description", "MESSAGE_CLASSES", "encode_message", "decode_header"],
        "._messages",
    ),
    "ControlDecoder": "._control",
    "HandshakeBudget": "._budget",
    **dict.fromkeys(
        ["SessionProtocol", "HandshakeLimits", "Request", "Reason", "Refused", "reason", "reason_of",
         "Configured", "Resized", "Failed", "Challenged", "Finished", "CLIENT", "DAEMON", "handshake",
         "DescribingProtocol", "DescribeAsked", "Described", "DESCRIBING", "NOTE_PREFIX"],
        "._session",
    ),
    **dict.fromkeys(
        ["FrameKind", "Direction", "Frame", "ControlFrame", "FdsFrame", "StreamData", "StreamClose",
         "encode_frame", "encode_data_header", "FrameDecoder"],
        "._frames",
    ),
}


from ._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, _HOME, __all__)


if TYPE_CHECKING:
    from ._version import __version__
    from ._budget import HandshakeBudget
    from ._control import ControlDecoder
    from ._frames import (ControlFrame, Direction, FdsFrame, Frame, FrameDecoder, FrameKind,
                          StreamClose, StreamData, encode_data_header, encode_frame)
    from ._session import (CLIENT, DAEMON, Challenged, Configured, Failed, Finished, HandshakeLimits, Reason,
                           Refused, Request, Resized, SessionProtocol, handshake, reason, reason_of,
                           DESCRIBING, NOTE_PREFIX, DescribeAsked, Described, DescribingProtocol)
    from ._messages import (MESSAGE_CLASSES, Arg, Describe, Description, End, Env, Error, Exit, Fd, Message, MessageType, Secret,
                            SessionKind, SessionType, Unauthorized, Winsize, decode_header,
                            encode_message)
