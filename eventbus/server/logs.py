"""Making what a client sends safe to write into the server's log.

A client controls the text of its error reports, its names and its close reasons.
Written verbatim, a newline in them forges a whole log line, and a flood of them
fills the disk; so such text is quoted (escaped, and cut short) before it reaches
a log, and each connection has a budget of log lines (see ``Connection``).
"""

from __future__ import annotations

import logging

__all__ = ["LogBudget", "may_log", "quote"]

logger = logging.getLogger("eventbus.server")

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


class LogBudget:
    """A token bucket of log lines: ``burst`` at once, refilled at ``per_second``.

    Each connection has one, and the bus one for all connections together, so
    that a client reconnecting to get a fresh budget still cannot flood the log.
    """

    __slots__ = ("_at", "_burst", "_per_second", "_tokens", "suppressed", "what")

    def __init__(
        self, burst: float, per_second: float, now: float,
        what: str = "log lines caused by clients",
    ) -> None:
        #: What the lines are, for the line that says how many were suppressed.
        self.what = what
        self._burst = burst
        self._per_second = per_second
        self._tokens = burst
        self._at = now
        #: Lines refused since the last one allowed.
        self.suppressed = 0

    def allow(self, now: float) -> bool:
        """Take a line from the budget, or count it as suppressed."""
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._per_second)
        self._at = now
        if self._tokens < 1.0:
            self.suppressed += 1
            return False
        self._tokens -= 1.0
        return True


def may_log(now: float, *budgets: LogBudget) -> bool:
    """Whether a line may be written now under every one of ``budgets``; the first
    line allowed after some were refused is preceded by one saying how many."""
    if not all(budget.allow(now) for budget in budgets):
        return False
    suppressed = sum(budget.suppressed for budget in budgets)
    if suppressed:
        logger.info("%d %s were suppressed", suppressed, budgets[-1].what)
        for budget in budgets:
            budget.suppressed = 0
    return True
