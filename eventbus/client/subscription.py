"""A bounded stream of room events for ``async for``: what ``client.subscribe`` yields."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable
from typing import Any

import trio

from ..errors import ConnectionClosed
from .messages import Incoming

__all__ = ["Subscription"]

logger = logging.getLogger("eventbus.client")


class Subscription:
    """The room events of some rooms, in arrival order, from a bounded buffer.

    The client's reader never waits for a subscriber: it puts each event in the
    buffer and moves on. When the buffer is full, the **oldest** buffered event is
    dropped to make room for the new one (for live data the newest is worth
    most). Drops are counted in :attr:`dropped` and logged as a warning, once per
    overflow episode (an episode ends when the subscriber has emptied the buffer).

    Iteration ends (``StopAsyncIteration``) when the ``subscribe`` block exits. If
    the client loses its connection for good (reconnection off, refused, or given
    up), the events already buffered are delivered first, then iteration raises
    :class:`~eventbus.ConnectionClosed`. While the client reconnects, iteration
    simply waits; the events published meanwhile follow once the session is
    resumed (those the server replays), and ``client.on_resume`` says for each room
    whether that was all of them.

    Attributes:
        rooms: The rooms this subscription receives.
        dropped: Events dropped because the buffer was full.
        missed: Events the *server* dropped for this connection in these rooms,
            as reported by GAP packets.

    .. versionadded:: 0.1.0
    """

    def __init__(self, rooms: Iterable[str], buffer: int) -> None:
        if buffer < 1:
            raise ValueError(f"buffer must be at least 1, not {buffer!r}")
        self.rooms = frozenset(rooms)
        self.buffer_size = buffer
        self.dropped = 0
        self.missed = 0
        self._buffer: deque[Incoming] = deque()
        self._lot = self._make_waiter()
        self._overflowing = False
        self._ended = False
        self._error: ConnectionClosed | None = None

    def __repr__(self) -> str:
        return (f"<Subscription rooms={sorted(self.rooms)} buffered={len(self._buffer)} "
                f"dropped={self.dropped}>")

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Incoming:
        while not self._buffer:
            if self._error is not None:
                raise ConnectionClosed(
                    str(self._error.args[0]) if self._error.args else "connection closed",
                    close_code=self._error.close_code, reason=self._error.reason,
                ) from self._error
            if self._ended:
                raise StopAsyncIteration
            await self._wait()
        return self._take()

    def receive_nowait(self) -> Incoming:
        """The next buffered event.

        Raises:
            trio.WouldBlock: nothing is buffered.
        """
        if not self._buffer:
            raise trio.WouldBlock
        return self._take()

    def statistics(self) -> dict[str, int]:
        """Counters: ``buffered``, ``buffer_size``, ``dropped``, ``missed``."""
        return {
            "buffered": len(self._buffer),
            "buffer_size": self.buffer_size,
            "dropped": self.dropped,
            "missed": self.missed,
        }

    def _take(self) -> Incoming:
        event = self._buffer.popleft()
        if not self._buffer:
            self._overflowing = False
        return event

    # --- called by the client ---------------------------------------------------------

    def _push(self, event: Incoming) -> None:
        if self._ended:
            return
        if len(self._buffer) >= self.buffer_size:
            self._buffer.popleft()
            self.dropped += 1
            if not self._overflowing:
                self._overflowing = True
                logger.warning(
                    "subscription to %s is not read fast enough: its buffer of %d events "
                    "is full, dropping the oldest (%d dropped so far)",
                    ", ".join(sorted(self.rooms)), self.buffer_size, self.dropped,
                )
        self._buffer.append(event)
        self._wake()

    def _fail(self, error: ConnectionClosed) -> None:
        self._error = error
        self._wake()

    def _end(self) -> None:
        self._ended = True
        self._buffer.clear()
        self._wake()

    # --- waiting: trio's here, asyncio's in eventbus.asyncio ----------------------------

    def _make_waiter(self) -> Any:
        return trio.lowlevel.ParkingLot()

    async def _wait(self) -> None:
        await self._lot.park()

    def _wake(self) -> None:
        self._lot.unpark_all()
