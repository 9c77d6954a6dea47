"""The hand-over: what Redis brought, handed to the node in order, one task, so
that a Redis blip is invisible to clients.

Each room's messages reach the node once each, in seq order, without holes: when
a message's seq jumps past the last one handed, or a room is found to have moved
on without this node (its subscription broke, its inbox overflowed), the messages
in between are read back from the room's history and handed first (``repaired``);
what history no longer holds (trimmed, or the room keeps none) is counted
(``lost_received``) and reported to the node (:meth:`~eventbus.adapters.Node.lost`),
which tells the room's members (GAP).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeAlias

import trio

from ...errors import Unavailable
from ...protocol import Position
from ..base import Envelope, HistoryBounds, HistoryPage, Node, Signal
from .logs import LogBudget
from .rooms import Room, Rooms
from .wire import Incoming

__all__ = ["CATCH_UP", "PAGE", "CatchUp", "HandOver", "Inbox", "ReadHistory"]

#: Messages read from a room's history at once when repairing.
PAGE = 256


class CatchUp:
    """Put in the inbox to wake the hand-over: a room reached a position that the
    node may not have been handed (:meth:`.Rooms.behind`)."""

    __slots__ = ()


CATCH_UP = CatchUp()

#: What the inbox between the subscriber and the hand-over carries.
Inbox: TypeAlias = Incoming | CatchUp

#: Reads a room's history: room, epoch, after, limit, bounds (as ``Adapter.history``).
ReadHistory: TypeAlias = Callable[[str, str, int, int, HistoryBounds], Awaitable[HistoryPage]]


class HandOver:
    """Hands the inbox's messages to the node (:meth:`run`), repairing rooms from
    history with ``read``.

    Args:
        rooms: Where this node stands in each room; the hand-over moves it on.
        counters: The adapter's counters (``repaired``, ``lost_received``,
            ``epochs_lost``).
        log_lost: The log budget of lost messages.
    """

    def __init__(self, rooms: Rooms, counters: dict[str, int], read: ReadHistory, *,
                 log_lost: LogBudget) -> None:
        self._rooms = rooms
        self._counters = counters
        self._read = read
        self._log_lost = log_lost

    async def run(self, node: Node, receive: trio.MemoryReceiveChannel[Inbox]) -> None:
        """Hand what comes out of ``receive`` to ``node``, until it closes."""
        try:
            while True:
                try:
                    item = receive.receive_nowait()
                except trio.WouldBlock:
                    # Only with the inbox empty: whatever arrived before a room was
                    # found behind has been handed, so catching up never overtakes it.
                    await self._catch_up(node)
                    item = await receive.receive()
                if isinstance(item, Signal):
                    node.receive_signal(item)
                elif not isinstance(item, CatchUp):
                    await self._message(node, *item)
        except trio.EndOfChannel:
            return

    async def _message(self, node: Node, envelope: Envelope, position: Position) -> None:
        room = envelope.room
        entry = self._rooms.get(room)
        if entry is not None:
            if entry.epoch is None:
                entry.epoch, entry.seq = position.epoch, position.seq - 1
            elif entry.epoch == position.epoch and position.seq <= entry.seq:
                return  # handed already, read back from history (or from before it started)
            await self._advance(node, room, entry, position.epoch, position.seq - 1)
            entry.seq = position.seq
        # Else a room this node stopped wanting: no member to count anything for.
        node.deliver(envelope, position)

    async def _catch_up(self, node: Node) -> None:
        for room, entry, target in self._rooms.take_behind():
            if entry.epoch is None:
                # Its first message was the one dropped: nothing before it is owed.
                entry.epoch, entry.seq = target.epoch, target.seq - 1
            await self._advance(node, room, entry, target.epoch, target.seq)

    async def _advance(self, node: Node, room: str, entry: Room, epoch: str, upto: int) -> None:
        """Make sure the node was handed ``room``'s messages up to seq ``upto`` of
        ``epoch``."""
        if entry.epoch != epoch:
            # A new epoch (Redis lost the room): how much of the old one's end this
            # node missed is gone with it, beyond what it knew was there.
            known = entry.target
            if known is not None and known.epoch == entry.epoch:
                entry.target = None
                await self._repair(node, room, entry, known.seq)
            self._counters["epochs_lost"] += 1
            entry.epoch, entry.seq = epoch, 0
        if upto > entry.seq:
            await self._repair(node, room, entry, upto)

    async def _repair(self, node: Node, room: str, entry: Room, upto: int) -> None:
        """Hand the messages after ``entry.seq`` up to ``upto`` from history; report
        those it no longer holds."""
        assert entry.epoch is not None
        start = entry.seq
        bounds = node.history_bounds(room)
        handed = 0 if bounds is None else await self._from_history(node, room, entry, upto,
                                                                    bounds)
        self._counters["repaired"] += handed
        entry.seq = max(entry.seq, upto)
        lost = upto - start - handed
        if lost > 0:
            self._counters["lost_received"] += lost
            self._log_lost.warning("%d messages of room %r did not reach this node and are"
                                   " not in its history", lost, room)
            node.lost(room, lost)

    async def _from_history(self, node: Node, room: str, entry: Room, upto: int,
                            bounds: HistoryBounds) -> int:
        """Hand what history holds of ``room`` after ``entry.seq`` up to ``upto``;
        returns how many it handed."""
        assert entry.epoch is not None
        epoch, handed = entry.epoch, 0
        while entry.seq < upto:
            limit = min(PAGE, upto - entry.seq)
            try:
                page = await self._read(room, epoch, entry.seq, limit, bounds)
            except Unavailable:
                break  # what is left is lost: the live messages cannot wait for Redis
            if page.position.epoch != epoch:
                break  # Redis lost the room meanwhile: the rest went with it
            fresh = [(seq, envelope) for seq, envelope in page.messages
                     if entry.seq < seq <= upto]
            for seq, envelope in fresh:
                node.deliver(envelope, Position(epoch, seq))
                entry.seq = seq
            handed += len(fresh)
            if len(page.messages) < limit or not fresh:
                break  # history holds no more of the range
        return handed
