"""Asking PAM whether a secret opens a user's account.

libpam through python-pam's bindings, with a conversation of our own: it
copies the secret straight from its bytearray into the memory PAM frees, so
no immutable copy of it is made, and the bytearray is wiped once PAM is
done. Authentication, then the account check (pam_acct_mgmt); credentials
and sessions are not touched, since the front-end grants nothing to its own
process. Blocking: this runs in a worker thread.
"""

from __future__ import annotations

import enum
from ctypes import CFUNCTYPE, POINTER, byref, c_char, c_int, c_uint, c_void_p, cast, memmove, sizeof
from dataclasses import dataclass

from ._first_message import wipe

# Constants of the Linux-PAM ABI (security/_pam_types.h).
PAM_SUCCESS = 0
PAM_BUF_ERR = 5
PAM_PERM_DENIED = 6
PAM_AUTH_ERR = 7
PAM_CRED_INSUFFICIENT = 8
PAM_USER_UNKNOWN = 10
PAM_MAXTRIES = 11
PAM_NEW_AUTHTOK_REQD = 12
PAM_ACCT_EXPIRED = 13
PAM_CONV_ERR = 19
PAM_DISALLOW_NULL_AUTHTOK = 0x0001
PAM_RUSER = 8
# An item holding a function that libpam calls instead of sleeping after a
# failure: the front-end waits on its event loop, not in a worker thread.
PAM_FAIL_DELAY = 10
PAM_PROMPT_ECHO_OFF = 1
PAM_ERROR_MSG = 3
PAM_TEXT_INFO = 4

_FailDelay = CFUNCTYPE(None, c_int, c_uint, c_void_p)


class Outcome(enum.Enum):
    ACCEPTED = "accepted"
    # Wrong secret (or no such user): the client may ask again.
    REFUSED = "refused"
    # The secret was right but the account check said no.
    DENIED = "denied"
    # The secret was right but has expired and must be changed first.
    EXPIRED = "expired"
    # PAM could not decide (misconfiguration, a module's error, a timeout).
    ERROR = "error"
    # Never PAM's word: the front-end's lock-out refused to ask PAM at all.
    LOCKED = "locked"


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    # pam_strerror's words for the last status, for the log and the client.
    reason: str
    # Seconds of delay the PAM stack asked for after a failure.
    requested_delay: float = 0.0
    # What the modules said (PAM_ERROR_MSG, PAM_TEXT_INFO), for the log.
    messages: tuple[str, ...] = ()


_REFUSALS = {PAM_AUTH_ERR, PAM_USER_UNKNOWN, PAM_MAXTRIES, PAM_CRED_INSUFFICIENT, PAM_PERM_DENIED}
_ACCOUNT_DENIALS = {PAM_ACCT_EXPIRED, PAM_PERM_DENIED, PAM_AUTH_ERR, PAM_USER_UNKNOWN}


def check_secret(service: str, user: str, secret: bytearray) -> Verdict:
    """PAM's verdict on `secret` for `user`; wipes `secret` whatever happens."""
    try:
        return _check(service, user, secret)
    finally:
        wipe(secret)


def _check(service: str, user: str, secret: bytearray) -> Verdict:
    import pam
    from pam.__internals import PamConv, PamHandle, conv_func

    lib = pam.PamAuthenticator()  # binds libpam once per process
    messages: list[str] = []
    requested_usec = [0]

    def conversation(count, prompts, response_out, _appdata):
        try:
            return _answer(lib, count, prompts, response_out, secret, messages)
        except BaseException:  # an exception must not reach C as "success"
            return PAM_CONV_ERR

    def on_fail_delay(status, usec, _appdata):
        if status != PAM_SUCCESS:
            requested_usec[0] = max(requested_usec[0], usec)

    conversation_callback = conv_func(conversation)
    delay_callback = _FailDelay(on_fail_delay)
    conv = PamConv(conversation_callback, None)
    handle = PamHandle()
    status = lib.pam_start(service.encode(), user.encode(), byref(conv), byref(handle))
    if status != PAM_SUCCESS:
        return Verdict(Outcome.ERROR, f"pam_start: {_strerror(lib, handle, status)}")
    try:
        lib.pam_set_item(handle, PAM_RUSER, user.encode())
        lib.pam_set_item(handle, PAM_FAIL_DELAY, cast(delay_callback, c_void_p))
        status = lib.pam_authenticate(handle, PAM_DISALLOW_NULL_AUTHTOK)
        if status == PAM_SUCCESS:
            status = lib.pam_acct_mgmt(handle, PAM_DISALLOW_NULL_AUTHTOK)
            if status == PAM_SUCCESS:
                outcome = Outcome.ACCEPTED
            elif status == PAM_NEW_AUTHTOK_REQD:
                outcome = Outcome.EXPIRED
            elif status in _ACCOUNT_DENIALS:
                outcome = Outcome.DENIED
            else:
                outcome = Outcome.ERROR
        else:
            outcome = Outcome.REFUSED if status in _REFUSALS else Outcome.ERROR
        reason = _strerror(lib, handle, status)
    finally:
        lib.pam_end(handle, status)
    return Verdict(outcome, reason, requested_usec[0] / 1e6, tuple(messages))


def _strerror(lib, handle, status: int) -> str:
    text = lib.pam_strerror(handle, status)
    return text.decode("utf-8", "replace") if text else f"PAM status {status}"


def _answer(lib, count, prompts, response_out, secret: bytearray, messages: list[str]) -> int:
    """Answer every hidden prompt with the secret; note what modules say.

    A prompt that wants a visible answer (a user name, a one-time code) or a
    kind we do not know cannot be answered by a front-end that holds only a
    password, so the conversation fails instead of guessing.
    """
    from pam.__internals import PamResponse

    styles = []
    for index in range(count):
        prompt = prompts[index].contents
        if prompt.msg_style in (PAM_ERROR_MSG, PAM_TEXT_INFO):
            if prompt.msg:
                messages.append(prompt.msg.decode("utf-8", "replace"))
        elif prompt.msg_style != PAM_PROMPT_ECHO_OFF:
            return PAM_CONV_ERR
        styles.append(prompt.msg_style)
    responses_address = lib.calloc(count, sizeof(PamResponse))
    if not responses_address:
        return PAM_BUF_ERR
    responses = cast(responses_address, POINTER(PamResponse))
    copies = []
    for index, style in enumerate(styles):
        if style != PAM_PROMPT_ECHO_OFF:
            continue
        copy = lib.calloc(len(secret) + 1, 1)
        if not copy:
            for address in copies:
                memmove(address, bytes(len(secret)), len(secret))
                lib.libc.free(c_void_p(address))
            lib.libc.free(c_void_p(responses_address))
            return PAM_BUF_ERR
        source = (c_char * len(secret)).from_buffer(secret)
        memmove(copy, source, len(secret))
        del source
        copies.append(copy)
        responses[index].resp = copy
        responses[index].resp_retcode = 0
    response_out[0] = responses
    return PAM_SUCCESS
