"""The command line's side of a session over tcp:// and tls://: one poll loop, no trio.

The same session as `run_endpoint_session` on a MuxChannel (SessionProtocol,
the handshake, follow_reply, the password flow) and the same channel
(protocol.md, section 3, in `proto.lean`'s frames), driven from a single
poll() loop, because the command line starts for every call and trio
costs it most of a tenth of a second. The dialing side's rules of the trio
multiplexer hold here too:

- stdin (stream 0) is read only while the link has nothing of ours in
  hand, so no keystroke is read that cannot be sent at once;
- stdout and stderr (streams 2 and 4) each hold at most DEFAULT_STREAM_BUFFER
  bytes waiting for their descriptor; beyond that the link is not read and
  the daemon feels it through TCP;
- on Exit stdin is read no more, and the status waits until the outputs
  have reached their end and are written out, or have been quiet for
  DEFAULT_EXIT_GRACE; after a refusal (an Error before the Exit) no program
  ran, so only what arrived is written out.
"""

from __future__ import annotations

import _signal as signal  # the C modules: `signal` and `socket` import enum, milliseconds of every start
import _socket as socket
import os
import select
import time

from capsudo.proto import (CLIENT, DATA_FRAME_SIZE, DEFAULT_EXIT_GRACE, DEFAULT_MAX_FRAME_PAYLOAD,
                           DEFAULT_STREAM_BUFFER, ProtocolError, SessionProtocol, handshake, lean)
from capsudo.transport import EndpointError, dial, parse_endpoint, private_access

from ._client_request import ClientError, terminal_size
from ._password_flow import CLOSED_BEFORE_STATUS, PasswordFlow, PasswordRequired, follow_reply
from ._fatal_signals import stop_on_signals
from ._unix_client import SessionResult

#: How long the reader may still look for the daemon's reason once a write to the link failed.
FAILURE_SETTLE_TIME = 0.25
#: How many streams the daemon may announce on one connection.
MAX_PEER_STREAMS = 64

STDIN, STDOUT, STDERR = 0, 2, 4  # the dialing side's stream ids
_IN, _OUT, _ERRS = select.POLLIN, select.POLLOUT, select.POLLERR | select.POLLHUP


def run_lean_channel_session(endpoint: str, request, tls=None, ask_secret=None, on_retry=None) -> SessionResult:
    """Run one session on a tcp:// or tls:// endpoint, as run_endpoint_session does, without trio.

    Other endpoints (vsock://, ssh://) go to run_endpoint_session.
    """
    parsed = parse_endpoint(endpoint)
    if parsed.scheme not in ("tcp", "tls"):
        from ._channel_client import run_endpoint_session

        return run_endpoint_session(endpoint, request, tls, ask_secret=ask_secret, on_retry=on_retry)
    flow = PasswordFlow(ask_secret, on_retry)
    while True:
        errors: list[str] = []
        try:
            link = dial(parsed, tls)
        except EndpointError as exc:
            raise ClientError(str(exc)) from None
        except ValueError as exc:
            raise ClientError(str(exc)) from None
        try:
            status = _Session(link, request, flow.secret, errors).run()
        except PasswordRequired as challenge:
            flow.challenged(challenge.prompt)
            continue
        finally:
            link.close()
        if flow.finished(status, errors):
            return SessionResult(status, errors)


class _Descriptor:
    """One of our stdio descriptors, through a descriptor of our own (see private_access)."""

    def __init__(self, fd: int, stream_id: int, *, read: bool) -> None:
        self.stream_id = stream_id
        self.how, self.fd = private_access(fd, read=read, write=not read, own_descriptors=True)
        self.socket = socket.socket(fileno=self.fd) if self.how == "socket" else None
        # Regular files cannot be polled, and never keep us waiting.
        self.pollable = self.how != "plain"
        self.closed = False
        self.buffer: list[bytes] = []  # an output's bytes that wait for the descriptor
        self.buffered = 0
        self.eof_received = False  # the daemon's StreamClose: no more data
        self.peer_gone = False  # the daemon's StreamClose on our input, or its second on an output
        self.gone_sent = False
        self.last_progress = time.monotonic()

    def read(self) -> bytes | None:
        try:
            if self.socket is not None:
                return self.socket.recv(DATA_FRAME_SIZE, socket.MSG_DONTWAIT)
            return os.read(self.fd, DATA_FRAME_SIZE)
        except BlockingIOError:
            return None

    def write(self, data) -> int | None:
        try:
            if self.socket is not None:
                return self.socket.send(data, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
            # A descriptor we could not make non-blocking takes what a pipe
            # takes at once when it is writable, so the loop blocks little.
            return os.write(self.fd, data if self.how != "thread" else data[:select.PIPE_BUF])
        except BlockingIOError:
            return None

    @property
    def done(self) -> bool:
        return self.closed or (self.eof_received and not self.buffered)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.buffer.clear()
            self.buffered = 0
            if self.socket is not None:
                self.socket.close()
            else:
                os.close(self.fd)


class _Session:
    def __init__(self, link, request, secret: bytes | None, errors: list[str]) -> None:
        self.link = link
        self.request = request
        self.secret = secret
        self.errors = errors
        self.protocol = SessionProtocol(CLIENT)
        self.out = bytearray()  # frames for the link, in order
        self.inbound = bytearray()
        self.descriptors: list[_Descriptor] = []
        self.peer_streams: set[int] = set()
        self.status: int | None = None
        self.outcome_at = 0.0
        self.link_ended = False
        self.write_failure: OSError | None = None
        self.read_failure: OSError | None = None  # reported once what arrived before it is written out
        self.write_failed_at = 0.0
        self.poller = select.poll()
        self.registered: dict[int, int] = {}
        self.sent_size = request.winsize

    # ---- the session ---------------------------------------------------------

    def run(self) -> int:
        request = self.request
        wake_read, wake_write = os.pipe()
        os.set_blocking(wake_write, False)
        previous_wakeup = signal.set_wakeup_fd(wake_write)  # a signal handler's frame must wake poll()
        self.wake = wake_read
        try:
            with stop_on_signals():
                if not request.interactive:
                    self._queue_request()
                    return self._loop()
                # contextlib and termios: for a terminal only
                from ._terminal import leave_program_modes, on_window_change, raw_mode

                # Raw before the descriptors leave: the program may read the
                # terminal the moment it starts. A password challenge leaves
                # this block, and the terminal restored, before the secret is asked for.
                with raw_mode(request.stdio[0], on_continue=self._send_size):
                    self._queue_request()
                    with on_window_change(self._send_size):
                        self._send_size()  # a resize between the handshake and now would go unseen
                        try:
                            return self._loop()
                        except ClientError:
                            leave_program_modes(request.stdio[1])  # the program died with its daemon
                            raise
        finally:
            signal.set_wakeup_fd(previous_wakeup)
            os.close(wake_read)
            os.close(wake_write)
            for descriptor in self.descriptors:
                descriptor.close()

    def _queue_request(self) -> None:
        for type_code, payload in handshake(self.request, self.secret):
            self.protocol.send(type_code)
            if type_code == lean.FD:
                stdin, stdout, stderr = self.request.stdio
                self.descriptors = [
                    _Descriptor(stdin, STDIN, read=True),
                    _Descriptor(stdout, STDOUT, read=False),
                    _Descriptor(stderr, STDERR, read=False),
                ]
                self.out += lean.fds_frame([(STDIN, lean.READ), (STDOUT, lean.WRITE), (STDERR, lean.WRITE)])
            else:
                self.out += lean.control_frame(lean.message(type_code, payload))
        self.handshake_left = len(self.out)

    def _send_size(self) -> None:
        stdio = self.request.stdio
        size = terminal_size(stdio[1]) or terminal_size(stdio[0])
        if size and size != self.sent_size and self.status is None:
            try:
                self.protocol.send(lean.WINSIZE)
            except ProtocolError:
                return  # after the outcome a resize has nowhere to go
            self.out += lean.control_frame(lean.winsize(*size))
            self.sent_size = size

    # ---- the loop ------------------------------------------------------------

    def _loop(self) -> int:
        stdin, *outputs = self.descriptors
        while True:
            if self.status is not None or self.link_ended:
                if self._outputs_finished(outputs):
                    if self.status is None:
                        if self.read_failure is not None:
                            raise self._link_failure("connection to the daemon lost", self.read_failure)
                        if self.write_failure is not None:
                            raise self._link_failure("connection lost during the handshake"
                                                     if self.handshake_left > 0 else "connection to the daemon lost",
                                                     self.write_failure)
                        raise ClientError(CLOSED_BEFORE_STATUS)
                    return self.status
            full = any(d.buffered >= DEFAULT_STREAM_BUFFER for d in outputs)
            wanted: dict[int, int] = {self.wake: _IN}
            link_events = 0
            if not self.link_ended and not full:
                link_events |= _IN
            if self.out and self.write_failure is None:
                link_events |= _OUT
            if link_events:
                wanted[self.link.fileno()] = link_events
            reading_stdin = (not self.out and self.status is None and not stdin.closed and not stdin.peer_gone
                             and self.write_failure is None and not self.link_ended)
            timeout = self._timeout(outputs)
            if reading_stdin:
                if stdin.pollable:
                    wanted[stdin.fd] = _IN
                else:
                    timeout = 0
            for output in outputs:
                if output.buffered and not output.closed:
                    if output.pollable:
                        wanted[output.fd] = _OUT
                    else:
                        timeout = 0
            if self.link.pending and not full:
                timeout = 0
            self._register(wanted)
            ready = dict(self.poller.poll(None if timeout is None else max(timeout, 0) * 1000))
            if self.wake in ready:
                os.read(self.wake, 512)
            link_ready = ready.get(self.link.fileno(), 0) if link_events else 0
            if link_ready & (_OUT | _ERRS) and self.out:
                self._write_link()
            if (link_ready & (_IN | _ERRS) or self.link.pending) and not self.link_ended and not full:
                self._read_link()
            self._decode()
            for output in outputs:
                if output.buffered and not output.closed and (not output.pollable or ready.get(output.fd)):
                    self._write_output(output)
            if reading_stdin and not self.out and (not stdin.pollable or ready.get(stdin.fd)):
                self._read_stdin(stdin)
            if self.write_failure is not None and not self.link_ended:
                if time.monotonic() - self.write_failed_at > FAILURE_SETTLE_TIME:
                    self.link_ended = True

    def _timeout(self, outputs) -> float | None:
        if self.write_failure is not None and not self.link_ended:
            return self.write_failed_at + FAILURE_SETTLE_TIME - time.monotonic()
        if self.status is None:
            return None
        pending = [d for d in outputs if not d.done]
        if pending and all(not d.buffered for d in pending):
            quiet_since = max([self.outcome_at] + [d.last_progress for d in pending])
            return quiet_since + DEFAULT_EXIT_GRACE - time.monotonic()
        return None

    def _outputs_finished(self, outputs) -> bool:
        if self.inbound and not self.write_failure:
            return False  # frames still to decode, once the outputs make room
        pending = [d for d in outputs if not d.done]
        if not pending:
            return True
        if any(d.buffered for d in pending):
            return False
        if self.link_ended or self.errors:
            return True  # nothing more can come: the link is gone, or no program ran
        quiet_since = max([self.outcome_at] + [d.last_progress for d in pending])
        return time.monotonic() - quiet_since >= DEFAULT_EXIT_GRACE

    def _register(self, wanted: dict[int, int]) -> None:
        for fd in [fd for fd in self.registered if fd not in wanted]:
            self.poller.unregister(fd)
            del self.registered[fd]
        for fd, events in wanted.items():
            if self.registered.get(fd) != events:
                self.poller.register(fd, events)
                self.registered[fd] = events

    # ---- the link ------------------------------------------------------------

    def _write_link(self) -> None:
        while self.out:
            try:
                sent = self.link.send(self.out)
            except OSError as exc:
                # What the daemon said before it closed is worth more than a
                # broken pipe: the reader gets a moment to find it.
                self.write_failure = exc
                self.write_failed_at = time.monotonic()
                self.out.clear()
                return
            if sent is None:
                return
            del self.out[:sent]
            self.handshake_left -= sent

    def _read_link(self) -> None:
        while True:
            try:
                data = self.link.recv(DATA_FRAME_SIZE)
            except OSError as exc:
                # As on trio, the output that arrived before a reset still reaches its reader.
                self.link_ended = True
                if self.status is None:
                    self.read_failure = exc
                return
            if data is None:
                return
            if not data:
                self.link_ended = True  # what arrived before the end is still decoded
                return
            self.inbound += data
            if not self.link.pending:
                return

    def _link_failure(self, what: str, exc: OSError) -> ClientError:
        if self.link.tls:
            import ssl

            from capsudo.transport import describe_tls_failure

            if isinstance(exc, (ssl.SSLError, ssl.CertificateError)):
                reason = describe_tls_failure(exc, server_side=False)
                return ClientError(f"the daemon refused the TLS connection: {reason}")
        reason = exc.strerror or str(exc) or type(exc).__name__
        return ClientError(f"{what}: the connection ({self.link.description}) broke: {reason}")

    def _decode(self) -> None:
        outputs = self.descriptors[1:]
        inbound = self.inbound
        header_size = lean.FRAME_HEADER_SIZE
        while len(inbound) >= header_size and not any(d.buffered >= DEFAULT_STREAM_BUFFER for d in outputs):
            try:
                kind, stream_id, length = lean.parse_frame_header(inbound[:header_size], DEFAULT_MAX_FRAME_PAYLOAD)
            except ProtocolError as exc:
                raise ClientError(f"the daemon sent a bad reply: {exc}") from None
            if len(inbound) < header_size + length:
                break
            payload = bytes(inbound[header_size : header_size + length])
            del inbound[: header_size + length]
            try:
                self._dispatch(kind, stream_id, payload)
            except ProtocolError as exc:
                raise ClientError(f"the daemon sent a bad reply: {exc}") from None
        self._check_whole()

    def _check_whole(self) -> None:
        if self.link_ended and self.inbound and not self.write_failure:
            header_size = lean.FRAME_HEADER_SIZE
            if len(self.inbound) < header_size or len(self.inbound) < header_size + lean.FRAME_HEADER.unpack(
                self.inbound[:header_size]
            )[2]:
                if self.read_failure is not None:
                    raise self._link_failure("connection to the daemon lost", self.read_failure)
                raise ClientError("the daemon sent a bad reply: the connection closed in the middle of a frame")

    def _dispatch(self, kind: int, stream_id: int, payload: bytes) -> None:
        if kind == lean.CONTROL_FRAME:
            type_code, body = lean.control_of_frame(payload)
            if type_code == lean.FD:
                raise ProtocolError(
                    "an Fd control message cannot cross the multiplexer; descriptors are announced with an Fds frame"
                )
            status = follow_reply(self.protocol, self.errors, type_code=type_code, payload=body)
            if status is not None and self.status is None:
                self.status = status
                self.outcome_at = time.monotonic()
                self.descriptors[0].close()  # the session is over: not one more byte of our input is read
        elif kind == lean.FDS_FRAME:
            for peer_id, _direction in lean.fds_records(payload):
                if peer_id % 2 != 1:
                    raise ProtocolError(f"the peer announced stream {peer_id}; its stream ids are odd")
                if peer_id in self.peer_streams:
                    raise ProtocolError(f"stream {peer_id} was announced twice")
                if len(self.peer_streams) >= MAX_PEER_STREAMS:
                    raise ProtocolError(f"the peer announced more than {MAX_PEER_STREAMS} streams")
                self.peer_streams.add(peer_id)  # a client takes no descriptors: what they carry is dropped
        else:
            what = "StreamData" if kind == lean.STREAM_DATA else "StreamClose"
            descriptor = next((d for d in self.descriptors if d.stream_id == stream_id), None)
            if descriptor is None:
                if stream_id in self.peer_streams:
                    return
                raise ProtocolError(f"{what} for stream {stream_id}, which was never announced")
            if kind == lean.STREAM_DATA:
                self._receive_data(descriptor, payload)
            else:
                self._receive_close(descriptor)

    def _receive_data(self, descriptor: _Descriptor, data: bytes) -> None:
        if not data:
            return  # a probe of the link: valid on any announced stream
        if descriptor.stream_id == STDIN:
            raise ProtocolError(f"StreamData on stream {STDIN}, which carries no data from the peer")
        if descriptor.eof_received:
            raise ProtocolError(f"StreamData on stream {descriptor.stream_id} after its StreamClose")
        if descriptor.closed:
            return  # nobody reads this stream any more
        descriptor.buffer.append(data)
        descriptor.buffered += len(data)

    def _receive_close(self, descriptor: _Descriptor) -> None:
        if descriptor.stream_id != STDIN and not descriptor.eof_received:
            descriptor.eof_received = True
            if not descriptor.buffered:
                descriptor.close()  # the reader of our stdout sees its end of file
        elif not descriptor.peer_gone:
            descriptor.peer_gone = True
        else:
            raise ProtocolError(
                f"more StreamClose frames for stream {descriptor.stream_id} than the protocol allows"
            )

    # ---- our descriptors ------------------------------------------------------

    def _read_stdin(self, stdin: _Descriptor) -> None:
        try:
            data = stdin.read()
        except OSError:
            data = b""  # a read error (EIO from a terminal that hung up) ends this input
        if data is None:
            return
        if data:
            self.out += lean.frame_header(lean.STREAM_DATA, STDIN, len(data))
            self.out += data
        else:
            self.out += lean.frame(lean.STREAM_CLOSE, STDIN)
            stdin.close()
        self._write_link()

    def _write_output(self, output: _Descriptor) -> None:
        while output.buffer:
            chunk = output.buffer[0]
            try:
                written = output.write(chunk)
            except OSError:
                # Its reader went away (EPIPE) or it failed: tell the daemon to
                # stop sending instead of discarding its bytes forever.
                if not output.eof_received and not output.gone_sent:
                    output.gone_sent = True
                    self.out += lean.frame(lean.STREAM_CLOSE, output.stream_id)
                output.close()
                return
            if written is None:
                return
            output.last_progress = time.monotonic()
            output.buffered -= written
            if written == len(chunk):
                output.buffer.pop(0)
            else:
                output.buffer[0] = chunk[written:]
        if output.eof_received:
            output.close()
