"""Who of this node's connections is in which room.

Synchronous and deterministic: no I/O, no clock. Members are kept in insertion
order, so a broadcast reaches them in the order they joined. A room's position is
decided by the adapter, for all nodes at once; a room here only remembers the
last one it saw.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from ..protocol import Position

__all__ = ["Room", "RoomRegistry"]

M = TypeVar("M")


class Room(Generic[M]):
    """One room's members on this node, and the last position it saw."""

    __slots__ = ("members", "name", "position")

    def __init__(self, name: str) -> None:
        self.name = name
        self.position: Position | None = None
        # A dict used as an ordered set: O(1) add/remove, stable fan-out order.
        self.members: dict[M, None] = {}

    def __repr__(self) -> str:
        return f"<Room {self.name!r} {len(self.members)} members at {self.position}>"


class RoomRegistry(Generic[M]):
    """All rooms of one server node. A room exists while it has members."""

    __slots__ = ("_rooms",)

    def __init__(self) -> None:
        self._rooms: dict[str, Room[M]] = {}

    def join(self, name: str, member: M) -> Room[M]:
        room = self._rooms.get(name)
        if room is None:
            room = self._rooms[name] = Room(name)
        room.members[member] = None
        return room

    def leave(self, name: str, member: M) -> None:
        room = self._rooms.get(name)
        if room is None:
            return
        room.members.pop(member, None)
        if not room.members:
            del self._rooms[name]

    def get(self, name: str) -> Room[M] | None:
        return self._rooms.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._rooms

    def __iter__(self) -> Iterator[Room[M]]:
        return iter(self._rooms.values())

    def __len__(self) -> int:
        return len(self._rooms)
