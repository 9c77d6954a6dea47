"""What a client receives: one value type for direct and room events."""

from __future__ import annotations

from typing import Any

import attrs

from ..protocol import Position

__all__ = ["Incoming"]


@attrs.frozen(slots=True)
class Incoming:
    """An event the server sent to this client.

    A *room event* (ROOM_EVENT on the wire) has ``room``, ``epoch`` and ``seq``; a
    *direct event* (EVENT: addressed to this connection alone, possibly a server
    call) has ``None`` in all three.

    Attributes:
        room: The room it was delivered through, or ``None`` for a direct event.
        event: The event name (names starting with ``$`` come from the server).
        data: The payload (``bytes`` may appear under msgpack).
        epoch: The room's epoch (see :attr:`position`).
        seq: The message's number in the room's epoch.

    .. versionadded:: 0.1.0
    """

    room: str | None
    event: str
    data: Any
    epoch: str | None = None
    seq: int | None = None

    @property
    def position(self) -> Position | None:
        """``Position(epoch, seq)`` for a room event, ``None`` for a direct one."""
        if self.epoch is None or self.seq is None:
            return None
        return Position(self.epoch, self.seq)
