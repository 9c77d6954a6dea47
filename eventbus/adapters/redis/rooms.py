"""This node's rooms in Redis: those it is subscribed to or lingers in, the last
position it handed to the node in each, and where it knows each stands (so that
what it missed is read back from history, :mod:`.handover`)."""

from __future__ import annotations

import math
import secrets

import coredis
import trio

from ...protocol import Position
from .keys import Keys
from .scripts import Scripts

__all__ = ["Room", "Rooms"]


class Room:
    """A room this node is subscribed to, or lingers in."""

    __slots__ = ("epoch", "linger_until", "seq", "target")

    def __init__(self) -> None:
        # None while the node has members in it; then, when to unsubscribe.
        self.linger_until: float | None = None
        # The last position handed to the node (no epoch: nothing yet); only the
        # hand-over changes it once it is set.
        self.epoch: str | None = None
        self.seq = 0
        # A position the room is known to have reached that the node may not have
        # been handed (a resubscription read it, or the inbox dropped its message).
        self.target: Position | None = None


class Rooms:
    """The rooms this node wants, by name; a room is forgotten ``linger`` seconds
    after it stopped wanting it (:meth:`channels`)."""

    def __init__(self, keys: Keys, scripts: Scripts, *, linger: float, room_ms: int) -> None:
        self._keys = keys
        self._scripts = scripts
        self._linger = linger
        self._room_ms = room_ms
        self._rooms: dict[str, Room] = {}
        self._behind: set[str] = set()

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

    def get(self, room: str) -> Room | None:
        return self._rooms.get(room)

    def subscribed_at(self, room: str, position: Position) -> bool:
        """Redis confirmed the subscription to ``room``, which stood at ``position``;
        whether the node may be behind it (see :meth:`behind`)."""
        entry = self._rooms.get(room)
        if entry is None:
            return False
        if entry.epoch is None:
            # Nothing before it is owed to a node that just subscribed.
            entry.epoch, entry.seq = position.epoch, position.seq
            return False
        return self.behind(room, position)

    def behind(self, room: str, position: Position) -> bool:
        """``room`` reached ``position``, which the node may not have been handed;
        whether that is news (the hand-over is to catch up, :meth:`take_behind`)."""
        entry = self._rooms.get(room)
        if entry is None or (entry.epoch == position.epoch and position.seq <= entry.seq):
            return False
        target = entry.target
        if target is not None and target.epoch == position.epoch and target.seq >= position.seq:
            return False
        entry.target = position
        self._behind.add(room)
        return True

    def take_behind(self) -> list[tuple[str, Room, Position]]:
        """The rooms the node may be behind in, and the positions they reached."""
        taken = []
        for room in self._behind:
            entry = self._rooms.get(room)
            if entry is not None and entry.target is not None:
                taken.append((room, entry, entry.target))
                entry.target = None
        self._behind.clear()
        return taken

    async def positions(self, client: coredis.Redis[bytes], rooms: list[str]) -> list[Position]:
        """The positions of ``rooms``, read in Redis (their epochs created if new)."""
        if not rooms:
            return []
        script = self._scripts.position
        epoch = secrets.token_urlsafe(6)
        if len(rooms) == 1:
            # One call: coredis's Script loads the script again on NOSCRIPT.
            results = [await script(keys=self._keys.room_keys(rooms[0]),
                                    args=[epoch, self._room_ms], client=client)]
        else:
            async with client.pipeline(transaction=False) as pipe:
                for room in rooms:
                    pipe.evalsha(script.sha, keys=self._keys.room_keys(room),
                                 args=[epoch, self._room_ms])
            results = list(pipe.results or ())
        return [Position(bytes(e).decode(), int(s)) for e, s in results]

