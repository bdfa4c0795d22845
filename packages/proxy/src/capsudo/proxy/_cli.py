"""`capsudo-proxy [-o user[:group]] [-m mode] -S LISTEN TARGET` and `capsudo-proxy --stdio TARGET`"""

from __future__ import annotations

import sys

from capsudo.core import LIMITS_SECTION, TLS_SECTION, parse_or_status, usage_text

from ._settings import proxy_options

SYNOPSIS = """\
usage: capsudo-proxy [-o user[:group]] [-m mode] [options] -S LISTEN TARGET
       capsudo-proxy [options] --stdio TARGET"""

DESCRIPTION = """\
Expose the capability at TARGET on another endpoint: every session that
arrives at LISTEN is forwarded to TARGET, whatever the two transports are
(a path or unix:///path, tcp://HOST:PORT, tls://HOST:PORT, vsock://CID:PORT,
and, for TARGET only, ssh://[USER@]HOST[:PORT]/PATH).
The proxy adds no authority: it reaches only TARGET, and whoever can reach
LISTEN holds what TARGET grants. A daemon behind it sees the proxy as its peer;
the proxy logs the original one."""

INTROS = {
    TLS_SECTION: "For a tls:// LISTEN, all three. --tls-client-ca is an older name of --tls-ca.",
    LIMITS_SECTION: "A peer is a uid, an address, a client certificate or a vsock context id. Times take 30s, "
                    "5m, 500ms or plain seconds; sizes 64K, 1M or plain bytes.",
}


def usage() -> str:
    return usage_text(SYNOPSIS, DESCRIPTION, proxy_options(), INTROS)


def main(argv: list[str] | None = None) -> int:
    from ._settings import parse_command_line

    argv = sys.argv[1:] if argv is None else argv
    settings, status = parse_or_status("capsudo-proxy", usage, proxy_options(), argv, parse_command_line)
    if status is not None:
        return status

    import trio

    from ._serve import serve_stdio, serve_listening

    if settings.stdio:
        return trio.run(serve_stdio, settings)
    from capsudo.core import hold_stop_signals

    hold_stop_signals()
    return trio.run(serve_listening, settings)
