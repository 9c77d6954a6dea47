"""The adapter's log: one logger, and budgets that keep a recurring trouble (a full
queue, messages this version cannot read) to a line every few seconds."""

from __future__ import annotations

import logging
import math

import trio

__all__ = ["LOG_EVERY", "LogBudget", "logger"]

logger = logging.getLogger("eventbus.adapters.redis")

#: At most one log line per kind of trouble this often (seconds).
LOG_EVERY = 10.0


class LogBudget:
    """At most one line every ``LOG_EVERY`` seconds, saying how many were left out."""

    def __init__(self) -> None:
        self._next = -math.inf
        self._quiet = 0

    def warning(self, message: str, *args: object) -> None:
        now = trio.current_time()
        if now < self._next:
            self._quiet += 1
            return
        if self._quiet:
            message += f" ({self._quiet} more like it since the last line)"
        logger.warning(message, *args)
        self._next, self._quiet = now + LOG_EVERY, 0
