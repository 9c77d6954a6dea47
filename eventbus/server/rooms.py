"""Who is in which room, and each room's position in its history.

Synchronous and deterministic: no I/O, no clock. Members are kept in insertion
order, so a broadcast reaches them in the order they joined.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Generic, TypeVar

__all__ = ["Room", "RoomRegistry"]

M = TypeVar("M")


class Room(Generic[M]):
    """One room: its members and its position ``(epoch, seq)``.

    The epoch is chosen when the room's history begins (when it is created); ``seq``
    is the number of the last message sent through the room, 0 before the first.
    """

    __slots__ = ("epoch", "members", "name", "seq")

    def __init__(self, name: str) -> None:
        self.name = name
        self.epoch = secrets.token_urlsafe(6)
        self.seq = 0
        # A dict used as an ordered set: O(1) add/remove, stable fan-out order.
        self.members: dict[M, None] = {}

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def __repr__(self) -> str:
        return f"<Room {self.name!r} {len(self.members)} members at {self.epoch}:{self.seq}>"


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
