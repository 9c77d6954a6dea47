"""Resuming a session: the RESUME request, room by room (PROTOCOL.md section 9).

For each room the connection is added as a *waiting* member (its node subscribes,
so every later message reaches the node and its history), the history after the
client's position is read in pages and sent at the pace the client reads, and
when the replay has caught up with what this node has delivered, the connection
goes live, fenced at the last seq it was sent: no gap and no repeat at the seam,
whichever node the client comes back to, and whenever Redis delivers.
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import TYPE_CHECKING, Any

from ..codes import CloseCode, NotRecovered
from ..errors import Forbidden, ResumeFailed, Unavailable
from ..protocol import Position, Resume, RoomEvent
from .sessions import Tokens

if TYPE_CHECKING:
    from ..adapters import HistoryBounds
    from .app import EventBus
    from .connection import Connection

__all__ = ["PAGE", "Recovery"]

logger = logging.getLogger("eventbus.server")

#: Messages read from a room's history at once.
PAGE = 256

Verdict = dict[str, Any]


def _recovered(replayed: int, position: Position) -> Verdict:
    return {"recovered": True, "replayed": replayed, "position": position.to_wire()}


def _not_recovered(reason: NotRecovered, position: Position | None = None) -> Verdict:
    verdict: Verdict = {"recovered": False, "reason": reason.value}
    if position is not None:
        verdict["position"] = position.to_wire()
    return verdict


class Recovery:
    """The resume tokens and the resumes of one bus."""

    def __init__(self, bus: EventBus) -> None:
        self._bus = bus
        self._tokens = Tokens(bus.config.resume_ttl)
        # Signs tokens while no shared secret is known (alone, or before Redis).
        self._own = secrets.token_bytes(32)

    def reconfigure(self) -> None:
        self._tokens = Tokens(self._bus.config.resume_ttl)

    def _secrets(self) -> list[bytes]:
        configured = self._bus.config.secret
        if configured:
            return [configured.encode()]
        shared = self._bus.adapter.shared_secret()
        return [shared, self._own] if shared is not None else [self._own]

    def issue(self, conn: Connection) -> str:
        """A resume token for ``conn`` and its session."""
        return self._tokens.issue(conn.sid, conn.session, time.time(), self._secrets()[0])

    def refresh(self, conn: Connection, now: float) -> None:
        """Give ``conn`` a fresh token (``$resume_token``), before its own expires or
        once it has resumed another session."""
        conn.resume_token = self.issue(conn)
        conn.token_refresh = now + self._bus.config.resume_ttl / 2
        conn.emit("$resume_token", conn.resume_token)

    async def resume(self, conn: Connection, packet: Resume, now: float) -> dict[str, Verdict]:
        """Take over the session ``packet`` names, and give back its rooms.

        Returns:
            Each room's verdict (PROTOCOL.md section 9.4).

        Raises:
            ResumeFailed: the token is wrong, expired, of another sid, or this is not
                the connection's first request.
        """
        if conn.requests > 1:
            raise ResumeFailed("RESUME must be the first request of a connection")
        session = self._tokens.verify(packet.sid, packet.resume_token, time.time(),
                                      self._secrets())
        if packet.sid == conn.sid:
            session = None  # its own session already: taking it over would close itself
        if session is None:
            if self._bus.metrics is not None:
                self._bus.metrics.resumes["resume_failed"] += 1
            raise ResumeFailed("the session cannot be resumed; join the rooms again")
        conn.session = session
        # Its WELCOME's token names the connection's own session, not this one.
        self.refresh(conn, now)
        self._bus._router.take_over(packet.sid)
        verdicts: dict[str, Verdict] = {}
        for room, position in packet.positions.items():
            if not conn.open:
                break
            verdicts[room] = await self._room(conn, room, position)
        metrics = self._bus.metrics
        if metrics is not None:
            for verdict in verdicts.values():
                metrics.resumes["recovered" if verdict["recovered"] else verdict["reason"]] += 1
                metrics.replayed += verdict.get("replayed", 0)
        return verdicts

    async def _room(self, conn: Connection, room: str, position: Position) -> Verdict:
        bus = self._bus
        router = bus._router
        if room not in conn.rooms and len(conn.rooms) >= bus.config.max_rooms:
            return _not_recovered(NotRecovered.TOO_MANY_ROOMS)
        try:
            await bus._dispatcher.authorize(bus._authorize_join, conn, room)
        except Forbidden:
            return _not_recovered(NotRecovered.FORBIDDEN)
        bounds = router.history.bounds(room)
        try:
            if bounds is None:
                return _not_recovered(NotRecovered.HISTORY_OFF, await router.join(conn, room))
            await router.join_waiting(conn, room)
            try:
                return await self._replay(conn, room, position, bounds)
            except BaseException:
                router.leave(conn, room)
                raise
        except Unavailable:
            return _not_recovered(NotRecovered.UNAVAILABLE)

    async def _replay(self, conn: Connection, room: str, position: Position,
                      bounds: HistoryBounds) -> Verdict:
        router = self._bus._router
        adapter = router.adapter
        limit = self._bus.config.max_replay
        page = await adapter.history(room, position.epoch, position.seq, PAGE, bounds)
        top = page.position
        if top.epoch != position.epoch or position.seq > top.seq:
            return self._live(conn, room, NotRecovered.EPOCH_CHANGED, top)
        if page.first > position.seq + 1:
            return self._live(conn, room, NotRecovered.WINDOW_EXCEEDED, top)
        if top.seq - position.seq > limit:
            return self._live(conn, room, NotRecovered.TOO_FAR_BEHIND, top)
        epoch, last, replayed = top.epoch, position.seq, 0
        while True:
            # Adapters return seqs after the one asked for, in order (conformance).
            for seq, envelope in page.messages:
                if envelope.sender != conn.session:
                    frame = router.room_frame(conn, RoomEvent(
                        room, envelope.event, envelope.data, epoch, seq))
                    if not await conn.send_paced(frame, room):
                        return _not_recovered(NotRecovered.UNAVAILABLE)
                    replayed += 1
                last = seq
            if len(page.messages) < PAGE:
                # Caught up with history as it was read: go live unless this node
                # has delivered more since (those are in history too: read on).
                here = router.rooms.get(room)
                known = here.position if here is not None else None
                if known is not None and known.epoch != epoch:
                    # The node went on in a new epoch meanwhile (Redis lost the room).
                    return self._live(conn, room, NotRecovered.EPOCH_CHANGED, known)
                if known is None or known.seq <= last:
                    break
                if not page.messages:
                    # The node delivered more than history gives back (entries this
                    # version cannot read): reading again would loop.
                    return self._live(conn, room, NotRecovered.WINDOW_EXCEEDED, known)
            if last - position.seq > 2 * limit:
                # The room outruns a client that reads: it would never catch up.
                conn.close(CloseCode.SLOW_CONSUMER, "cannot catch up with the room's replay")
                return _not_recovered(NotRecovered.TOO_FAR_BEHIND)
            page = await adapter.history(room, epoch, last, PAGE, bounds)
            if page.position.epoch != epoch:
                return self._live(conn, room, NotRecovered.EPOCH_CHANGED, page.position)
            if page.first > last + 1:
                # History moved on faster than the replay: what is left is gone.
                return self._live(conn, room, NotRecovered.WINDOW_EXCEEDED, page.position)
        reached = Position(epoch, last)
        router.go_live(conn, room, reached)
        return _recovered(replayed, reached)

    def _live(self, conn: Connection, room: str, reason: NotRecovered,
              position: Position) -> Verdict:
        # Joined at the room's position: what the node delivers late up to it skips
        # this connection, as for any JOIN answered with that position. The node may
        # have delivered beyond it while the connection waited (skipping it): then
        # it goes live from there, and the verdict says so, so that nothing after
        # the position it is told goes missing.
        router = self._bus._router
        here = router.rooms.get(room)
        known = here.position if here is not None else None
        if known is not None and (known.epoch != position.epoch or known.seq > position.seq):
            position = known
        router.go_live(conn, room, position)
        return _not_recovered(reason, position)
