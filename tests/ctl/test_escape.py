"""Whatever a client sends, what an approver is shown acts on no terminal and reads back to that one string."""

from __future__ import annotations

import re
import unicodedata

from hypothesis import given, strategies as st

from capsudo.ctl._escape import escaped

_ACTING = {"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"}


def _read_back(shown: str) -> str:
    """The inverse of escaped(): what the approver can reconstruct from what is shown."""
    short = {"\\": "\\", "n": "\n", "t": "\t", "r": "\r", "e": "\x1b"}

    def one(match: re.Match) -> str:
        body = match.group(1)
        return short[body] if body in short else chr(int(body[1:], 16))

    return re.sub(r"\\(x[0-9a-f]{2}|u[0-9a-f]{4}|U[0-9a-f]{8}|.)", one, shown)


@given(st.text(alphabet=st.characters(codec=None, categories=None)))
def test_nothing_that_acts_is_left_and_the_text_reads_back(text):
    shown = escaped(text)
    assert not any(unicodedata.category(char) in _ACTING for char in shown)
    assert _read_back(shown) == text


@given(st.lists(st.sampled_from(["\x1b[2J", "\u202e", "\u2066", "\u200b", "\ufeff", "\x00", "\x9b", "a", "\\"]),
                max_size=20).map("".join))
def test_the_dangerous_characters_in_any_mix(text):
    shown = escaped(text)
    assert shown.isprintable() and _read_back(shown) == text


def test_the_characters_the_threat_names():
    assert escaped("\x1b[31mred") == "\\e[31mred"
    assert escaped("rm -rf \u202e/ fdp") == "rm -rf \\u202e/ fdp"
    assert escaped("a\u200bb\u200c\u200d\ufeff") == "a\\u200bb\\u200c\\u200d\\ufeff"
    assert all(escaped(chr(code)) == f"\\u{code:04x}" for code in [*range(0x202A, 0x202F), *range(0x2066, 0x206A)])
    assert escaped("plain words") == "plain words"
    assert escaped("é ü 中文") == "é ü 中文"
