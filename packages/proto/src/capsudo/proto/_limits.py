"""Size limits of the wire contract and the defaults of our own caps."""

# A control message announcing more than this is refused before its payload
# is read (protocol.md, section 1).
MAX_CONTROL_PAYLOAD = 16 * 1024 * 1024

# The largest multiplexer frame we accept by default: room for one control
# message at the contract's limit, with its header. Data frames from the
# reference are at most 16 KiB; ours at most DATA_FRAME_SIZE.
DEFAULT_MAX_FRAME_PAYLOAD = MAX_CONTROL_PAYLOAD + 8

# How much one data frame of ours carries: larger frames cost fewer headers
# and fewer trips through the event loop (at 64 KiB those, not the copying,
# limited a session over tcp:// to half its rate), and any conforming peer
# accepts any size.
DATA_FRAME_SIZE = 256 * 1024

# How much one stream of the multiplexed channel buffers on the way in
# before its reader stops reading the link (backpressure through the link).
DEFAULT_STREAM_BUFFER = 256 * 1024

# How long a client's output streams may stay quiet, once the session's
# outcome is known, before the outcome is delivered anyway (protocol.md,
# section 3: a client does not exit before its output streams closed).
DEFAULT_EXIT_GRACE = 2.0
