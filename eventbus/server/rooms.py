"""Who of this node's connections is in which room.

Synchronous and deterministic: no I/O, no clock. Members are kept in insertion
order, so a broadcast reaches them in the order they joined. A room's position is
decided by the adapter, for all nodes at once; a room here only remembers the
last one it saw.

A member that resumes is first *waiting*: in the room (its node stays subscribed,
presence counts it) but not yet given live messages, while its replay is sent.
When it goes live it is *fenced* at the last seq the replay sent: live messages up
to that one (which a node behind its Redis may deliver late) skip it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from ..protocol import Position

__all__ = ["Room", "RoomRegistry"]

M = TypeVar("M")


class Room(Generic[M]):
    """One room's members on this node, and the last position it saw."""

    __slots__ = ("fences", "members", "name", "position", "waiting")

    def __init__(self, name: str) -> None:
        self.name = name
        self.position: Position | None = None
        # A dict used as an ordered set: O(1) add/remove, stable fan-out order.
        self.members: dict[M, None] = {}
        #: Members whose replay is being sent: no live messages yet.
        self.waiting: dict[M, None] = {}
        #: Live members that must not get messages up to a position (see above).
        self.fences: dict[M, Position] = {}

    def __repr__(self) -> str:
        return f"<Room {self.name!r} {len(self.members)} members at {self.position}>"

    def unfenced(self, position: Position) -> list[M]:
        """The members a message at ``position`` goes to; a fence is lifted by the
        first message past it (or of another epoch)."""
        fences = self.fences
        targets = []
        for member in self.members:
            fence = fences.get(member)
            if fence is not None:
                if fence.epoch == position.epoch and position.seq <= fence.seq:
                    continue
                del fences[member]
            targets.append(member)
        return targets


class RoomRegistry(Generic[M]):
    """All rooms of one server node. A room exists while it has members."""

    __slots__ = ("_rooms",)

    def __init__(self) -> None:
        self._rooms: dict[str, Room[M]] = {}

    def join(self, name: str, member: M, *, waiting: bool = False) -> Room[M]:
        room = self._rooms.get(name)
        if room is None:
            room = self._rooms[name] = Room(name)
        if waiting:
            room.waiting[member] = None
        else:
            room.members[member] = None
        return room

    def go_live(self, name: str, member: M, fence: Position | None) -> bool:
        """A waiting member starts getting live messages past ``fence``; whether it
        was waiting there (it may have left meanwhile)."""
        room = self._rooms.get(name)
        if room is None or member not in room.waiting:
            return False
        del room.waiting[member]
        room.members[member] = None
        if fence is not None:
            room.fences[member] = fence
        return True

    def leave(self, name: str, member: M) -> None:
        room = self._rooms.get(name)
        if room is None:
            return
        room.members.pop(member, None)
        room.waiting.pop(member, None)
        room.fences.pop(member, None)
        if not room.members and not room.waiting:
            del self._rooms[name]

    def get(self, name: str) -> Room[M] | None:
        return self._rooms.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._rooms

    def __iter__(self) -> Iterator[Room[M]]:
        return iter(self._rooms.values())

    def __len__(self) -> int:
        return len(self._rooms)
