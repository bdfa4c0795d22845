"""What the front-end is told on its command line, with the defaults."""

from __future__ import annotations

from dataclasses import dataclass

from capsudo.core import SessionLimits
from capsudo.transport import DEFAULT_MODE

DEFAULT_SERVICE = "capsudo"
DEFAULT_COMMAND = ("capsudod",)

# Like sudo's: PAM's own pam_unix asks for 2 s after a failure, and so does
# the pam_faildelay of most distributions.
DEFAULT_FAIL_DELAY = 2.0
# Ten wrong secrets within five minutes lock a user out until the oldest of
# them is five minutes old: a guesser gets at most two tries a minute, a
# person who mistypes three times in each of three commands is not stopped.
DEFAULT_MAX_FAILURES = 10
DEFAULT_FAILURE_WINDOW = 300.0
# Linux caps a line on a terminal at 4095 bytes; a password is far shorter.
MAX_SECRET = 4096


@dataclass
class FrontEndSettings:
    endpoint: str = ""
    owner: object = None
    mode: int = DEFAULT_MODE
    # Listen even where another user could swap files beside the socket.
    allow_unsafe_directory: bool = False
    service: str = DEFAULT_SERVICE
    command: tuple[str, ...] = DEFAULT_COMMAND
    # Seconds a client has, once connected, to send its first message.
    handshake_timeout: float = SessionLimits.handshake_timeout
    # Seconds from the start of a failed check to the reply.
    fail_delay: float = DEFAULT_FAIL_DELAY
    # Failures within the window that lock the user out; 0 turns the lock off.
    max_failures: int = DEFAULT_MAX_FAILURES
    failure_window: float = DEFAULT_FAILURE_WINDOW
    # A PAM stack that has not answered after this long counts as a failure.
    pam_timeout: float = 30.0
    # PAM checks running at once (each in a worker thread).
    max_pam_threads: int = 4
    # Connections in progress (before the hand-over), in all and per user.
    max_clients: int = 64
    max_clients_per_user: int = 8
    # When the front-end stops, chained commands get SIGTERM, then SIGKILL
    # after this long.
    shutdown_grace: float = 5.0
    max_secret: int = MAX_SECRET
    # Seconds a right password lets the same terminal session in without
    # asking again; 0 asks every time.
    remember: float = 0.0
