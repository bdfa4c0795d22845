"""The limits of one multiplexed channel, as one typed value.

A listener hands them to every channel it accepts; the commands read them
from their configuration. Kept apart from the multiplexer so that reading
a configuration imports no trio.
"""

from __future__ import annotations

from dataclasses import dataclass

from capsudo.proto import DEFAULT_MAX_FRAME_PAYLOAD, DEFAULT_STREAM_BUFFER


@dataclass(frozen=True)
class ChannelLimits:
    # A frame announcing more ends the session as a protocol error.
    max_frame_payload: int = DEFAULT_MAX_FRAME_PAYLOAD
    # Bytes buffered per stream before the link is no longer read.
    stream_buffer_limit: int = DEFAULT_STREAM_BUFFER

    def channel_arguments(self) -> dict[str, int]:
        """As MuxChannel's keyword arguments."""
        return {"max_frame_payload": self.max_frame_payload, "stream_buffer_limit": self.stream_buffer_limit}
