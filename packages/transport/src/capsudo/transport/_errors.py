"""The one error of reaching or setting up an endpoint, without trio: the one-shot client raises it too."""


class EndpointError(Exception):
    """The endpoint cannot be set up; the message says why, on one line."""
