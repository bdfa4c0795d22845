"""The one way a string from a client is shown to an approver: every character that could act, made visible.

A client chooses its arguments, its environment and (through its process)
its command line; shown raw, a terminal escape could repaint the screen, a
right-to-left override could make `rm -rf /` read as something harmless,
a zero-width character could make two names look alike. Here each such
character becomes a visible escape: control characters (C0, DEL, C1, ESC
among them), format characters (bidirectional overrides and isolates
U+202A–U+202E and U+2066–U+2069, zero-width U+200B–U+200D and U+FEFF),
line and paragraph separators and lone surrogates. A backslash is doubled,
so that what is shown reads back to exactly one string.
"""

from __future__ import annotations

import unicodedata

_ACTING = frozenset(("Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"))
_SHORT = {"\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r", "\x1b": "\\e"}


def escaped(text: str) -> str:
    """`text` with every character that a terminal might act on written as a visible escape."""
    if text.isascii() and text.isprintable() and "\\" not in text:
        return text
    return "".join(_escape_one(char) for char in text)


def _escape_one(char: str) -> str:
    if char in _SHORT:
        return _SHORT[char]
    if unicodedata.category(char) not in _ACTING:
        return char
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
