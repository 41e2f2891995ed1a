"""Jinja filters that make arbitrary strings safe inside an HAProxy 2.6 configuration.

HAProxy reads a config line in layers: the line parser (quotes, backslash escapes, `$VAR`
expansion, `#` comments), then per keyword a sample-fetch argument parser or a log-format
parser. Each filter below escapes for exactly one layer; compose them innermost first.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["haproxy_escape", "logformat_escape", "sample_arg"]

# Characters that are never special to HAProxy's line parser; a word made only of these is
# emitted as is, anything else is double-quoted.
_BARE_WORD: Final = re.compile(r"[A-Za-z0-9_.:/@%+,=~()\[\]-]+")
# Inside double quotes HAProxy still interprets backslash escapes and expands `$NAME`;
# `#` is escaped too so a stray quote can never turn the rest of a line into a comment.
_QUOTED_ESCAPES: Final = {"\\": "\\\\", '"': '\\"', "$": "\\$", "#": "\\#"}
_SAMPLE_ARG_WORD: Final = re.compile(r"[A-Za-z0-9_.-]+")


def _escape_char(char: str) -> str:
    if char in _QUOTED_ESCAPES:
        return _QUOTED_ESCAPES[char]
    code = ord(char)
    if code < 0x20 or code == 0x7F:
        # \xNN keeps control characters (CR, LF, NUL, ...) inside the token: no line breaks.
        return f"\\x{code:02x}"
    return char


def haproxy_escape(value: object) -> str:
    """One config word that HAProxy's line parser reads back as exactly ``str(value)``.

    Plain words pass unchanged; everything else (spaces, quotes, `$`, `#`, backslashes,
    control characters, the empty string) is double-quoted with the needed escapes.
    """
    text = str(value)
    if _BARE_WORD.fullmatch(text):
        return text
    return '"' + "".join(_escape_char(char) for char in text) + '"'


def logformat_escape(value: object) -> str:
    """Text for a log-format argument (redirect locations, `http-check send hdr` values):
    `%` starts a variable there, so literal percent signs are doubled."""
    return str(value).replace("%", "%%")


def sample_arg(value: object) -> str:
    """One argument of a sample fetch, e.g. the name in ``req.hdr(<name>)``.

    The argument parser splits on `,` and `)` and treats quotes specially, so anything but a
    plain token is wrapped in its own double quotes. The result still needs haproxy_escape
    as part of the whole fetch word.
    """
    text = str(value)
    if _SAMPLE_ARG_WORD.fullmatch(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
