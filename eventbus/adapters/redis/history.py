"""Rooms' histories in Redis: a room's bounds as the scripts take them, and a
history read back (the ``HISTORY`` script, :mod:`.scripts`)."""

from __future__ import annotations

import math
import secrets
from typing import Any

import coredis

from ...protocol import Position
from ..base import Envelope, HistoryBounds, HistoryPage
from .keys import Keys
from .logs import LogBudget
from .scripts import Scripts
from .wire import Undecodable, decode_tail

__all__ = ["OFF", "Histories", "history_args"]

#: The publish script's history arguments for a room that keeps none.
OFF = (0, 0, 0, "")

# The longest age a room's history is kept for, in ms (PEXPIRE takes any, but a
# bound keeps an absurd setting from overflowing).
_MAX_AGE_MS = 10 * 365 * 86400_000


def history_args(bounds: HistoryBounds | None, envelope: Envelope | None = None,
                 ) -> tuple[int, int, int, str]:
    """The history arguments of the scripts: size (0: no history), bytes, age in
    ms, and the message's publish key (empty: it has none)."""
    if bounds is None:
        return OFF
    age = bounds.age * 1000
    age_ms = _MAX_AGE_MS if not math.isfinite(age) else max(1, min(math.ceil(age), _MAX_AGE_MS))
    key = ""
    if envelope is not None and envelope.sender is not None and envelope.publish_id is not None:
        key = f"{envelope.sender}:{envelope.publish_id}"
    # A size below 1 would read as "no history"; a policy never gives one.
    return max(1, bounds.size), max(0, bounds.max_bytes), age_ms, key


class Histories:
    """Reads rooms' histories; entries this version cannot read are counted
    (``undecodable``) and left out."""

    def __init__(self, keys: Keys, scripts: Scripts, counters: dict[str, int], *,
                 room_ms: int, log: LogBudget) -> None:
        self._keys = keys
        self._scripts = scripts
        self._counters = counters
        self._room_ms = room_ms
        self._log = log

    async def read(self, client: coredis.Redis[bytes], room: str, epoch: str, after: int,
                   limit: int, bounds: HistoryBounds) -> HistoryPage:
        """What :meth:`~eventbus.adapters.Adapter.history` returns (coredis errors
        pass through)."""
        size, max_bytes, age_ms, _ = history_args(bounds)
        messages: list[tuple[int, Envelope]] = []
        cursor, position, oldest = max(0, after), None, 0
        while True:
            wanted = max(0, limit - len(messages))
            result: Any = await self._scripts.history(
                keys=self._keys.room_keys(room),
                args=[secrets.token_urlsafe(6), self._room_ms, epoch, cursor, wanted,
                      size, max_bytes, age_ms],
                client=client)
            current, last, first, flat = result
            if position is None:
                position = Position(bytes(current).decode(), int(last))
                oldest = int(first)
            for n in range(0, len(flat) - 1, 2):
                cursor = int(flat[n])
                try:
                    messages.append((cursor, decode_tail(bytes(flat[n + 1]))))
                except Undecodable as exc:
                    self._counters["undecodable"] += 1
                    self._log.warning("left out a message of room %r's history that this"
                                      " node cannot read: %s", room, exc)
            # A page that came back full but holds fewer messages (some unreadable)
            # is read on, so that a short page always means the end of the history.
            if len(flat) // 2 < wanted or len(messages) >= limit or wanted == 0:
                break
        return HistoryPage(position, oldest, messages)
