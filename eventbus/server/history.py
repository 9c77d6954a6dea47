"""Which rooms keep a history, and how much: the bus's history policy.

Every room keeps the last ``history_size`` messages of the last ``history_age``
seconds, ``history_bytes`` at most, unless a rule of ``history_rooms`` matches its
name first. A rule is ``PATTERN=off`` or ``PATTERN=SIZE/AGE[/BYTES]``, with an
``fnmatch`` pattern: ``game.*=off`` keeps nothing of a game's volatile state,
``audit.*=10000/3600`` keeps more of an audit trail. (Not commas: a list of rules in
a flag or an environment variable is split on them.)

Synchronous and free of I/O.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Iterable

from ..adapters import HistoryBounds

__all__ = ["HistoryPolicy", "parse_rule"]

# Distinct room names whose bounds are remembered; the cache starts over past it.
_CACHE = 4096


def parse_rule(rule: str) -> tuple[re.Pattern[str], HistoryBounds | None, int]:
    """A ``history_rooms`` rule: its compiled pattern, its bounds (``None``: off), and
    whether the bytes were given (1) or not (0).

    Raises:
        ValueError: not a rule, with what is wrong in it.
    """
    pattern, sep, value = rule.partition("=")
    pattern, value = pattern.strip(), value.strip()
    if not sep or not pattern:
        raise ValueError(f"history rule {rule!r}: write PATTERN=off or PATTERN=SIZE/AGE[/BYTES]")
    compiled = re.compile(fnmatch.translate(pattern))
    if value.lower() == "off":
        return compiled, None, 0
    parts = [part.strip() for part in value.split("/")]
    try:
        if len(parts) not in (2, 3):
            raise ValueError
        size, age = int(parts[0]), float(parts[1])
        max_bytes = int(parts[2]) if len(parts) == 3 else 0
    except ValueError:
        raise ValueError(f"history rule {rule!r}: after '=', write off or SIZE/AGE[/BYTES]"
                         " (an integer, seconds, an integer)") from None
    if size < 1 or not math.isfinite(age) or age <= 0 or (len(parts) == 3 and max_bytes < 1):
        raise ValueError(f"history rule {rule!r}: SIZE, AGE and BYTES must be positive"
                         " (a room that keeps nothing: PATTERN=off)")
    return compiled, HistoryBounds(size, age, max_bytes), len(parts) - 2


class HistoryPolicy:
    """The bounds of each room's history.

    Args:
        size: Messages a room keeps by default (0: no history by default).
        age: Seconds a message stays at most.
        max_bytes: Bytes a room's history holds at most (also for rules that
            give none).
        rules: ``history_rooms`` rules, first match wins.
    """

    __slots__ = ("_cache", "_default", "_rules")

    def __init__(self, size: int, age: float, max_bytes: int, rules: Iterable[str] = ()) -> None:
        self._default = HistoryBounds(size, age, max_bytes) if size > 0 else None
        self._rules: list[tuple[re.Pattern[str], HistoryBounds | None]] = []
        for rule in rules:
            pattern, bounds, has_bytes = parse_rule(rule)
            if bounds is not None and not has_bytes:
                bounds = HistoryBounds(bounds.size, bounds.age, max_bytes)
            self._rules.append((pattern, bounds))
        self._cache: dict[str, HistoryBounds | None] = {}

    @property
    def default(self) -> HistoryBounds | None:
        """The bounds of a room no rule matches."""
        return self._default

    def bounds(self, room: str) -> HistoryBounds | None:
        """How much history ``room`` keeps; ``None``: none."""
        try:
            return self._cache[room]
        except KeyError:
            pass
        found = self._default
        for pattern, bounds in self._rules:
            if pattern.match(room):
                found = bounds
                break
        if len(self._cache) >= _CACHE:
            self._cache.clear()
        self._cache[room] = found
        return found
