"""The least a Python client can do for `capsudo -S ENDPOINT -- true`.

startup.py runs this beside the real client: the same session in a dozen
lines of the C-level standard library (no option parsing, no error
handling, no capsudo package), i.e. the floor for any client written in
Python on this interpreter.

    python benchmarks/_minimal_client.py ENDPOINT
"""

import _socket
import struct
import sys

ARG, EXIT, FD, SESSION_TYPE, END, NON_INTERACTIVE = 1, 3, 4, 5, 255, 3


def message(type_code, payload=b""):
    return struct.pack("<II", type_code, len(payload)) + payload


connection = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
connection.connect(sys.argv[1])
connection.sendmsg([message(ARG, b"true") + message(SESSION_TYPE, struct.pack("<I", NON_INTERACTIVE))])
connection.sendmsg(
    [message(FD, struct.pack("<I", 3)) + message(END)],
    [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, struct.pack("3i", 0, 1, 2))],
)
while True:
    header = connection.recv(8, _socket.MSG_WAITALL)
    if len(header) < 8:
        sys.exit(1)
    type_code, length = struct.unpack("<II", header)
    payload = connection.recv(length, _socket.MSG_WAITALL) if length else b""
    if type_code == EXIT:
        sys.exit(struct.unpack("<i", payload)[0])
