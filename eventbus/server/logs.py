"""Making what a client sends safe to write into the server's log.

A client controls the text of its error reports, its names and its close reasons.
Written verbatim, a newline in them forges a whole log line, and a flood of them
fills the disk; so such text is quoted (escaped, and cut short) before it reaches
a log, and each connection has a budget of log lines (see ``Connection``).
"""

from __future__ import annotations

__all__ = ["quote"]

#: The most characters of a client's text a log line quotes.
QUOTE_LIMIT = 200


def quote(text: str, limit: int = QUOTE_LIMIT) -> str:
    """``text`` as a Python string literal, cut at ``limit`` characters.

    ``repr`` escapes what could break a log line or a terminal (newlines, other
    control characters, line separators, lone surrogates, backslashes) while
    keeping printable text, in any script, readable.
    """
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text) - limit} more characters)"
