"""`capsudo-proxy [-o user[:group]] [-m mode] -S LISTEN TARGET` and `capsudo-proxy --stdio TARGET`"""

from __future__ import annotations

import sys

from capsudo.core import UsageError

USAGE = """\
usage: capsudo-proxy [-o user[:group]] [-m mode] [options] -S LISTEN TARGET
       capsudo-proxy [options] --stdio TARGET

Expose the capability at TARGET on another endpoint: every session that
arrives at LISTEN is forwarded to TARGET, whatever the two transports are
(a path or unix:///path, tcp://HOST:PORT, tls://HOST:PORT, vsock://CID:PORT,
and, for TARGET only, ssh://[USER@]HOST[:PORT]/PATH).
The proxy adds no authority: it reaches only TARGET, and whoever can reach
LISTEN holds what TARGET grants. A daemon behind it sees the proxy as its peer;
the proxy logs the original one.

  -S LISTEN              where to listen
  --stdio                serve one session on stdin/stdout as the accepting
                         side of a multiplexed channel (what ssh:// runs)
  -o user[:group]        owner of a Unix LISTEN socket
  -m mode                octal permissions of a Unix LISTEN socket (default 0770)
  --allow-unsafe-directory
                         put a Unix LISTEN socket in a directory that another
                         user owns or that group or others may write (not
                         sticky); refused otherwise
  --tls-cert F, --tls-key F, --tls-client-ca F
                         certificate, key and client CA for a tls:// LISTEN
  --target-tls-cert F, --target-tls-key F, --target-tls-ca F
                         for a tls:// TARGET (default: $CAPSUDO_TLS_CERT,
                         $CAPSUDO_TLS_KEY, $CAPSUDO_TLS_CA)
  --max-sessions N       sessions at once (default 256)
  --max-sessions-per-peer N  of those, from one peer: a uid, an address, a
                         client certificate or a vsock context id (default 128)
  --max-handshakes N     connections that have not sent End yet (default 64)
  --max-handshakes-per-peer N  of those, from one peer (default 32)
  --handshake-timeout S  seconds a client has to send its request (default 10)
  --max-items N          arguments and environment entries a request may carry
                         (default 65536)
  --max-bytes N          bytes a client may send before End, whatever the
                         messages (default 4194304)
  -h                     show this help
"""

SHORT = {"S": True, "o": True, "m": True, "h": False}
LONG = {
    "help": False,
    "stdio": False,
    "allow-unsafe-directory": False,
    "tls-cert": True,
    "tls-key": True,
    "tls-client-ca": True,
    "target-tls-cert": True,
    "target-tls-key": True,
    "target-tls-ca": True,
    "max-sessions": True,
    "max-sessions-per-peer": True,
    "max-handshakes": True,
    "max-handshakes-per-peer": True,
    "handshake-timeout": True,
    "max-items": True,
    "max-bytes": True,
}


def _fail(message: str) -> int:
    sys.stderr.write(f"capsudo-proxy: {message}\n")
    return 1


def main(argv: list[str] | None = None) -> int:
    from ._settings import parse_command_line

    try:
        settings = parse_command_line(sys.argv[1:] if argv is None else argv, SHORT, LONG)
    except UsageError as exc:
        sys.stderr.write(f"capsudo-proxy: {exc} (see capsudo-proxy -h)\n")
        return 2
    if settings is None:
        sys.stdout.write(USAGE)
        return 0

    import trio

    from ._serve import serve_stdio, serve_listening

    if settings.stdio:
        return trio.run(serve_stdio, settings)
    from capsudo.core import hold_stop_signals

    hold_stop_signals()
    return trio.run(serve_listening, settings)
