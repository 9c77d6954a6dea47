"""A connection's bounded outbound queue and its delivery policies.

Frames wait here only when the socket would not take them at once. The queue is
bounded in messages and in bytes (a gap report may take it one message over);
what happens when it is full depends on the
policy a message was sent with:

* ``reliable`` (the default): the message cannot be dropped, so the connection is
  too slow to keep; :meth:`Outbox.push` reports it and the caller closes the
  connection with 4001.
* ``volatile``: the message is dropped for this connection and counted, and the
  client later receives a gap packet with the count.
* ``latest``: a queued message with the same key is superseded (it is dropped and
  counted the same way) and the new one goes to the back of the queue; with no
  such message to replace, the new one is dropped like a volatile one.

Synchronous and free of I/O: the connection writes what :meth:`Outbox.take`
returns.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable

__all__ = ["Delivery", "Outbox"]


class Delivery(enum.StrEnum):
    """How a message may be treated when its recipient's queue is full."""

    RELIABLE = "reliable"
    VOLATILE = "volatile"
    LATEST = "latest"


class _Entry:
    __slots__ = ("frame", "key", "room")

    def __init__(self, frame: bytes | None, room: str | None, key: str | None) -> None:
        self.frame = frame  # None once superseded
        self.room = room
        self.key = key


#: Builds the frame of a gap packet for ``(room, count)`` in the connection's codec.
GapEncoder = Callable[[str | None, int], bytes]


class Outbox:
    """The frames waiting for one connection's socket.

    Args:
        max_messages: How many messages may wait.
        max_bytes: How many bytes may wait.
        encode_gap: Makes a gap frame when dropped messages must be reported.
    """

    __slots__ = (
        "_dead", "_encode_gap", "_entries", "_gap_latest", "_gap_volatile", "_latest", "_live",
        "bytes", "dropped", "dropped_latest", "gaps", "gaps_latest", "gaps_sent",
        "gaps_volatile", "max_bytes", "max_messages",
    )

    def __init__(self, max_messages: int, max_bytes: int, encode_gap: GapEncoder) -> None:
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._encode_gap = encode_gap
        self._entries: deque[_Entry] = deque()
        self._latest: dict[tuple[str | None, str], _Entry] = {}
        self._live = 0
        self._dead = 0
        #: Bytes waiting.
        self.bytes = 0
        #: Drops not yet reported to the client, by room (None: direct messages).
        self.gaps: dict[str | None, int] = {}
        #: Drops since the connection opened (``latest`` ones also counted apart).
        self.dropped = 0
        self.dropped_latest = 0
        #: Gap packets queued for the client since the connection opened, and how
        #: many of them reported ``volatile`` and ``latest`` drops (a gap reporting
        #: both counts in both).
        self.gaps_sent = 0
        self.gaps_volatile = 0
        self.gaps_latest = 0
        # Rooms whose unreported drops hold volatile / superseded latest messages.
        self._gap_volatile: set[str | None] = set()
        self._gap_latest: set[str | None] = set()

    @property
    def idle(self) -> bool:
        """Nothing waits and nothing must be reported: a frame may skip the queue."""
        return not self._live and not self.gaps

    def __len__(self) -> int:
        return self._live

    def _full(self) -> bool:
        return self._live >= self.max_messages or self.bytes >= self.max_bytes

    def push(
        self, frame: bytes, delivery: Delivery = Delivery.RELIABLE, room: str | None = None,
        key: str | None = None,
    ) -> bool:
        """Queue a frame. Returns False only for a reliable frame that does not fit."""
        if delivery is Delivery.LATEST and key is not None:
            old = self._latest.get((room, key))
            if old is not None and old.frame is not None:
                self._discard(old)
                self._count_drop(room, latest=True)
            elif self._full():
                self._count_drop(room, latest=True)
                return True
            entry = _Entry(frame, room, key)
            self._latest[(room, key)] = entry
            self._report_gaps()
            self._append(entry)
            return True
        if self._full():
            if delivery is Delivery.RELIABLE:
                return False
            self._count_drop(room)
            return True
        self._report_gaps()
        self._append(_Entry(frame, room, None))
        return True

    def push_control(self, frame: bytes) -> None:
        """Queue a control frame (pong, close) or the rest of a partial write; it
        must go out in order whatever the bounds say."""
        self._append(_Entry(frame, None, None))

    def push_front(self, frame: bytes) -> None:
        """Put back the unwritten tail of a frame; it goes out first."""
        self._entries.appendleft(_Entry(frame, None, None))
        self._live += 1
        self.bytes += len(frame)

    def take(self, max_bytes: int) -> bytes:
        """Remove and join queued frames, up to about ``max_bytes`` (at least one)."""
        self._report_gaps()
        parts: list[bytes] = []
        size = 0
        entries = self._entries
        while entries and size < max_bytes:
            entry = entries.popleft()
            frame = entry.frame
            if frame is None:
                self._dead -= 1
                continue
            if entry.key is not None:
                self._latest.pop((entry.room, entry.key), None)
            parts.append(frame)
            size += len(frame)
        self._live -= len(parts)
        self.bytes -= size
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def clear(self) -> None:
        self._entries.clear()
        self._latest.clear()
        self._live = self._dead = self.bytes = 0

    def _append(self, entry: _Entry) -> None:
        self._entries.append(entry)
        self._live += 1
        assert entry.frame is not None
        self.bytes += len(entry.frame)

    def _discard(self, entry: _Entry) -> None:
        assert entry.frame is not None
        self.bytes -= len(entry.frame)
        entry.frame = None
        self._live -= 1
        self._dead += 1
        if self._dead > self._live:
            # Superseded entries stay in the deque until compacted; keep them from
            # outnumbering the live ones so memory stays bounded.
            self._entries = deque(e for e in self._entries if e.frame is not None)
            self._dead = 0

    def _count_drop(self, room: str | None, *, latest: bool = False) -> None:
        self.gaps[room] = self.gaps.get(room, 0) + 1
        self.dropped += 1
        if latest:
            self.dropped_latest += 1
            self._gap_latest.add(room)
        else:
            self._gap_volatile.add(room)

    def _report_gaps(self) -> None:
        # Gap reports go in before anything queued after the drops, as soon as they
        # fit; the message queued right after them may then overshoot the bound by
        # one, and an empty queue always takes them (so the writer always makes
        # progress); the queue stays bounded either way.
        if self.gaps and (not self._live or (
                self._live + len(self.gaps) <= self.max_messages
                and self.bytes < self.max_bytes)):
            gaps, self.gaps = self.gaps, {}
            self.gaps_sent += len(gaps)
            self.gaps_volatile += len(self._gap_volatile)
            self.gaps_latest += len(self._gap_latest)
            self._gap_volatile.clear()
            self._gap_latest.clear()
            for room, count in gaps.items():
                self._append(_Entry(self._encode_gap(room, count), None, None))
