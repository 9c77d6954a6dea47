"""What a client receives: one value type for direct and room events."""

from __future__ import annotations

from typing import Any

import attrs

from ..protocol import Position

__all__ = ["Incoming", "Recovery"]


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


@attrs.frozen(slots=True)
class Recovery:
    """What a reconnection did for one room: the room's verdict of the RESUME the
    client sent (PROTOCOL.md section 9.4), given to :meth:`Client.on_resume
    <eventbus.Client.on_resume>` hooks.

    Attributes:
        room: The room.
        recovered: Whether every message the client missed was replayed (it then
            has all of them, in order, once).
        replayed: How many messages were replayed (0 when nothing was missed).
        reason: Why not, when not recovered: ``history_off``, ``epoch_changed``,
            ``window_exceeded``, ``too_far_behind``, ``forbidden``,
            ``too_many_rooms``, ``unavailable`` (see
            :class:`~eventbus.codes.NotRecovered`), or ``resume_failed`` when the
            server refused the whole RESUME (the client then joined afresh). The
            app should refetch what it shows of such a room.
        position: Where the client stands in the room now (``None`` when it is no
            longer in it: ``forbidden``, ``too_many_rooms``, ``unavailable``).

    .. versionadded:: 0.2.0
    """

    room: str
    recovered: bool
    replayed: int = 0
    reason: str | None = None
    position: Position | None = None
