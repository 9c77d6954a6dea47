"""One open WebSocket connection of a client and the requests waiting on it.

A client goes through several links when it reconnects. Each link has its own
ack-id table: when a link is lost, every request pending on it fails at once with
:class:`~eventbus.ConnectionClosed`, as protocol/PROTOCOL.md section 7.2 requires.
"""

from __future__ import annotations

from typing import Any

import trio
import trio_websocket

from ..errors import ConnectionClosed, EventBusError
from ..protocol import Codec, Welcome
from .core import LinkCore
from .transport import map_exceptions

__all__ = ["Link", "Pending", "closed_copy"]


def closed_copy(error: ConnectionClosed) -> ConnectionClosed:
    """A new ConnectionClosed like ``error`` (one exception object per raiser)."""
    message = str(error.args[0]) if error.args else "connection closed"
    copy = ConnectionClosed(message, close_code=error.close_code, reason=error.reason)
    copy.__cause__ = error.__cause__
    return copy


class Pending:
    """A request waiting for its ACK or ERROR.

    Attributes:
        position_of: The room whose position the ACK carries (JOIN and PUBLISH), for
            the reader to record when it reads the ACK, in order with the room's
            ROOM_EVENTs; ``None`` for other requests.
    """

    __slots__ = ("done", "error", "position_of", "value")

    def __init__(self, position_of: str | None = None) -> None:
        self.done = trio.Event()
        self.value: Any = None
        self.error: EventBusError | None = None
        self.position_of = position_of

    def resolve(self, value: Any) -> None:
        self.value = value
        self.done.set()

    def reject(self, error: EventBusError) -> None:
        self.error = error
        self.done.set()


class Link(LinkCore):
    """A WebSocket connection after its WELCOME: the core's view of it (codec, ack
    ids, token) and its trio I/O.

    Attributes:
        ws: The trio-websocket connection.
        pending: Requests sent on this link awaiting an answer, by ack id.
        slots: Bounds the requests awaiting an answer to the server's ``max_pending``.
        error: Why the link ended, once it has.
        reader: The task reading this link (handlers run in it).
        began: When the link was established (``trio.current_time()``).
        last_heard: When something last arrived from the server.
    """

    def __init__(
        self, ws: trio_websocket.WebSocketConnection, codec: Codec, welcome: Welcome, target: str,
    ) -> None:
        super().__init__(codec, welcome)
        self.ws = ws
        self.target = target
        self.pending: dict[int, Pending] = {}
        self.error: ConnectionClosed | None = None
        self.reader: trio.lowlevel.Task | None = None
        self.scope = trio.CancelScope()
        self.began = self.last_heard = trio.current_time()
        # The server refuses requests beyond max_pending (too_many_pending): wait
        # for a slot instead. 0 would mean no request at all; treat it as no limit.
        limit = self.max_pending
        self.slots = trio.Semaphore(limit) if limit > 0 else None

    def allocate_id(self) -> int:
        """A fresh ack id, none of those pending."""
        return self.allocate(self.pending)

    async def send(self, payload: bytes) -> None:
        """Send one encoded packet (a text frame for JSON, binary for msgpack).

        Raises:
            ConnectionClosed: the link is lost.
        """
        if self.error is not None:
            raise closed_copy(self.error)
        with map_exceptions(self.target):
            await self.ws.send_message(self.message(payload))

    def fail(self, error: ConnectionClosed) -> bool:
        """Mark the link lost and fail every pending request; False if it already was."""
        if self.error is not None:
            return False
        self.error = error
        for pending in self.pending.values():
            pending.reject(closed_copy(error))
        self.pending.clear()
        self.scope.cancel()
        return True
