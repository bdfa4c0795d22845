"""The byte layouts of the wire contract, declared once with construct.

Everything the peers exchange is little-endian and fixed-width; these
declarations are the single description of it. They are compiled on first
use, so their parse and build cost stays a few microseconds per frame.
"""

from construct import Enum, GreedyBytes, Int8ul, Int16ul, Int32sl, Int32ul, Struct

CONTROL_HEADER = Struct("type" / Int32ul, "length" / Int32ul).compile()
FRAME_HEADER = Struct("kind" / Int8ul, "stream_id" / Int32ul, "length" / Int32ul).compile()

EXIT_PAYLOAD = Struct("status" / Int32sl).compile()
FD_PAYLOAD = Struct("count" / Int32ul).compile()
SESSION_TYPE_PAYLOAD = Struct("kind" / Int32ul).compile()
WINSIZE_PAYLOAD = Struct(
    "rows" / Int16ul, "cols" / Int16ul, "xpixels" / Int16ul, "ypixels" / Int16ul
).compile()
FDS_RECORD = Struct("stream_id" / Int32ul, "direction" / Int8ul).compile()

CONTROL_HEADER_SIZE = 8
FRAME_HEADER_SIZE = 9
FDS_RECORD_SIZE = 5

# Not compiled: only used to show a message's fields to a person (the demo).
DESCRIBED_CONTROL = Struct(
    "type"
    / Enum(
        Int32ul,
        Arg=1, Env=2, Exit=3, Fd=4, SessionType=5, Error=6,
        Secret=7, Unauthorized=8, Winsize=9, End=255,
    ),
    "length" / Int32ul,
    "payload" / GreedyBytes,
)
