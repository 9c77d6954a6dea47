"""This node's rooms in Redis: those it is subscribed to or lingers in, where each
stands, and what this node missed of them (``lost_received``, ``epochs_lost``)."""

from __future__ import annotations

import math
import secrets

import coredis
import trio

from ...protocol import Position
from ..base import Envelope
from .keys import Keys
from .scripts import Scripts

__all__ = ["Room", "Rooms"]


class Room:
    """A room this node is subscribed to, or lingers in."""

    __slots__ = ("epoch", "linger_until", "refund", "seq")

    def __init__(self) -> None:
        # None while the node has members in it; then, when to unsubscribe.
        self.linger_until: float | None = None
        # The last position this node had, to count what it missed.
        self.epoch: str | None = None
        self.seq = 0
        # Messages counted as missed at a resubscription that may still arrive.
        self.refund = 0

    def subscribed_at(self, position: Position) -> None:
        """Redis confirmed the subscription, and the room stood at ``position``."""
        if self.epoch != position.epoch:
            self.epoch, self.seq, self.refund = position.epoch, position.seq, 0
        self.seq = max(self.seq, position.seq)


class Rooms:
    """The rooms this node wants, by name; a room is forgotten ``linger`` seconds
    after it stopped wanting it (:meth:`channels`)."""

    def __init__(self, keys: Keys, scripts: Scripts, counters: dict[str, int], *,
                 linger: float, room_ms: int) -> None:
        self._keys = keys
        self._scripts = scripts
        self._counters = counters
        self._linger = linger
        self._room_ms = room_ms
        self._rooms: dict[str, Room] = {}

    def want(self, room: str) -> Room:
        entry = self._rooms.get(room)
        if entry is None:
            entry = self._rooms[room] = Room()
        entry.linger_until = None
        return entry

    def unwant(self, room: str) -> bool:
        """This node's last member left ``room``: it lingers there ``linger`` seconds.

        Returns:
            Whether the room started lingering now.
        """
        entry = self._rooms.get(room)
        if entry is None or entry.linger_until is not None:
            return False
        entry.linger_until = trio.current_time() + self._linger
        return True

    def channels(self) -> dict[str, str]:
        """The channels of the rooms to be subscribed to now (forgetting the others)."""
        now = trio.current_time()
        for room in [room for room, entry in self._rooms.items()
                     if entry.linger_until is not None and entry.linger_until <= now]:
            del self._rooms[room]
        return {self._keys.room(room, "c"): room for room in self._rooms}

    def lingering_until(self) -> float:
        """When the next lingering room is to be forgotten (``inf``: none lingers)."""
        lingering = [entry.linger_until for entry in self._rooms.values()
                     if entry.linger_until is not None]
        return min(lingering, default=math.inf)

    def known(self) -> list[str]:
        """The rooms this node had a position of."""
        return [room for room, entry in self._rooms.items() if entry.epoch is not None]

    async def positions(self, client: coredis.Redis[bytes], rooms: list[str]) -> list[Position]:
        """The positions of ``rooms``, read in Redis (their epochs created if new)."""
        if not rooms:
            return []
        script = self._scripts.position
        epoch = secrets.token_urlsafe(6)
        if len(rooms) == 1:
            # One call: coredis's Script loads the script again on NOSCRIPT.
            results = [await script(keys=[self._keys.room(rooms[0], "m")],
                                    args=[epoch, self._room_ms], client=client)]
        else:
            async with client.pipeline(transaction=False) as pipe:
                for room in rooms:
                    pipe.evalsha(script.sha, keys=[self._keys.room(room, "m")],
                                 args=[epoch, self._room_ms])
            results = list(pipe.results or ())
        return [Position(bytes(e).decode(), int(s)) for e, s in results]

    def count_gap(self, envelope: Envelope, position: Position) -> None:
        """A message arrived: count those before it that this node missed."""
        entry = self._rooms.get(envelope.room)
        if entry is None:
            return
        if entry.epoch != position.epoch:
            if entry.epoch is not None:
                # A new epoch (Redis lost the room) starts at seq 1: this node missed
                # the ones before this message, and the end of the old one, unknown.
                self._counters["epochs_lost"] += 1
                self._counters["lost_received"] += position.seq - 1
            entry.epoch, entry.seq, entry.refund = position.epoch, position.seq, 0
            return
        if position.seq > entry.seq + 1:
            self._counters["lost_received"] += position.seq - entry.seq - 1
        elif position.seq <= entry.seq and entry.refund:
            # Counted as missed when this node resubscribed, and here it is after all.
            entry.refund -= 1
            self._counters["lost_received"] -= 1
        entry.seq = max(entry.seq, position.seq)

    def count_missed(self, room: str, position: Position) -> None:
        """After a resubscription: what this node missed in ``room`` meanwhile."""
        entry = self._rooms.get(room)
        if entry is None or entry.epoch is None:
            return
        if entry.epoch != position.epoch:
            # The whole new epoch so far (it started at seq 1), and an unknown end of
            # the old one.
            self._counters["epochs_lost"] += 1
            entry.epoch, entry.seq, entry.refund = position.epoch, position.seq, position.seq
            self._counters["lost_received"] += position.seq
        elif position.seq > entry.seq:
            entry.refund = position.seq - entry.seq
            self._counters["lost_received"] += entry.refund
            entry.seq = position.seq
