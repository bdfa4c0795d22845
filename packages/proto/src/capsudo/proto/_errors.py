"""The one error a peer's bytes can cause."""


class ProtocolError(Exception):
    """The peer sent bytes that the wire contract does not allow.

    Decoders raise only this for bad input, whatever the input, so a caller
    can answer the peer and carry on serving everyone else.
    """
