"""TlsOptions as capsudo.core offers it: a library caller's tls:// settings, without importing the transport."""

from __future__ import annotations

from capsudo.transport import TlsOptions

__all__ = ["TlsOptions"]
