"""What the trio and the asyncio clients do the same way, written once.

The sans-IO core (:mod:`.core`) decides what each packet means and what to keep;
this module holds the flows both I/O layers run on top of it: resuming a session
and joining rooms again, handing each incoming packet to requests, subscriptions
and handlers, sending a publish again after a lost answer. They await only the
layer's own primitives (a request on a connection, the connection to use), so they
run unchanged under trio and under asyncio; each layer provides those, and owns
its tasks and waits.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable
from contextlib import suppress
from functools import partial
from typing import Any

from ..errors import (
    ConnectionClosed,
    EventBusError,
    LocalProtocolError,
    RemoteProtocolError,
    RequestError,
    ResumeFailed,
)
from ..protocol import (
    NAME_MAX_BYTES,
    ErrorReply,
    Join,
    Leave,
    Packet,
    Position,
    Publish,
    Resume,
    WelcomeOptions,
    check_name,
)
from .core import (
    Answered,
    Direct,
    Failed,
    GapReport,
    RoomDelivery,
    ServerError,
    SessionState,
    position_from,
    route,
)
from .handlers import Handler, answer, call_hook
from .messages import Incoming, Recovery

__all__ = ["SharedClient"]

logger = logging.getLogger("eventbus.client")


class SharedClient(abc.ABC):
    """The flows of a client over the core, for an I/O layer to inherit.

    A layer sets the attributes below and implements the abstract methods. A *link* is the layer's
    connection: a :class:`~.core.LinkCore` with ``pending`` (ack id -> an object
    with ``position_of``, ``resolve()`` and ``reject()``) and ``async send()``.
    """

    state: SessionState
    resume_timeout: float
    _target: str
    _link: Any
    _final: ConnectionClosed | None
    _handlers: dict[str, Handler]
    _subscriptions: list[Any]
    _on_gap: Callable[..., Any] | None
    _on_error: Callable[..., Any] | None

    # --- what the layer provides ------------------------------------------------------

    @abc.abstractmethod
    async def _request_on(self, link: Any, make: Callable[[int], Packet],
                          timeout: float | None, what: str, *,
                          position_of: str | None = None) -> Any:
        """Send a request on ``link`` and return its answer's data."""

    @abc.abstractmethod
    async def _wait_link(self) -> Any:
        """The link requests may use now, waiting for a reconnection if need be."""

    @abc.abstractmethod
    def _lose(self, link: Any, error: ConnectionClosed) -> None:
        """``link`` ended: fail its requests, wake who waits for a link."""

    @property
    @abc.abstractmethod
    def options(self) -> WelcomeOptions | None:
        """The server's settings from the current connection's WELCOME."""

    # --- names and publishes -----------------------------------------------------------

    def _check_name(self, name: str, what: str) -> None:
        options = self.options
        limit = NAME_MAX_BYTES
        if options is not None and 0 < options.max_name < NAME_MAX_BYTES:
            limit = options.max_name
        try:
            check_name(name, what, limit, reserved_ok=False)
        except RemoteProtocolError as exc:
            raise LocalProtocolError(exc.message, code=exc.code) from None

    async def _publish(self, room: str, event: str, data: Any,
                       timeout: float | None) -> Position | None:
        """A publish, sent again with its publish id after a lost answer while that
        is safe (:meth:`SessionState.may_send_again`)."""
        self._check_name(room, "room")
        self._check_name(event, "event")
        publish_id = self.state.new_publish_id()
        what = f"publish to {room!r}"
        link = await self._wait_link()
        while True:
            make = partial(Publish, room, event, data, publish_id=publish_id)
            try:
                return position_from(await self._request_on(link, make, timeout, what))
            except ConnectionClosed:
                if self._final is not None:
                    raise
                sent_on = link
                link = await self._wait_link()
                why = self.state.may_send_again(room, sent_on.generation)
                if why is not None:
                    raise ConnectionClosed(
                        f"the connection to {self._target} was lost before the answer to "
                        f"{what}, and {why}: it may or may not have been applied") from None

    # --- resuming -------------------------------------------------------------------------

    async def _resume(self, link: Any) -> dict[str, Recovery]:
        """Continue the session on a new connection: RESUME with the last position
        of each room, which the server replays from (PROTOCOL.md section 9); the
        rooms it cannot resume, and every room when it refuses the RESUME, are
        joined again. Returns each room's verdict (for the ``on_resume`` hook)."""
        state = self.state
        rooms, positions = state.resume_positions()
        again = [room for room in rooms if room not in positions]
        try:
            if state.previous is None:
                raise ResumeFailed("no session to resume")
            sid, token = state.previous
            result = await self._request_on(
                link, partial(Resume, sid, token, positions), self.resume_timeout,
                "resume the session")
        except ConnectionClosed:
            return {}
        except ResumeFailed as exc:
            logger.warning("%s did not resume the session (%s): joining the rooms again",
                           self._target, exc.message)
            verdicts = state.resume_refused(rooms)
            again = rooms
        except EventBusError as exc:
            # Without its answer the seam is unknown: start again on a new connection.
            self._lose(link, ConnectionClosed(f"could not resume the session: {exc}"))
            return {}
        else:
            verdicts, more, left = state.resumed(result, positions)
            again += more
            for room in left:
                with suppress(EventBusError):
                    await self._request_on(link, partial(Leave, room), None, f"leave {room!r}")
        state.rejoined(verdicts, await self._rejoin(link, sorted(again)))
        return verdicts

    async def _rejoin(self, link: Any, rooms: list[str]) -> dict[str, Position]:
        """Join rooms again on a new connection (those a RESUME did not give back);
        returns where each joined room stands."""
        joined: dict[str, Position] = {}
        for room in rooms:
            try:
                result = await self._request_on(link, partial(Join, room), None,
                                                f"join {room!r}", position_of=room)
                if room not in self.state.rooms:  # left while the join was on its way
                    await self._request_on(link, partial(Leave, room), None, f"leave {room!r}")
                    continue
                position = position_from(result)
                if position is not None:
                    joined[room] = position
            except ConnectionClosed:
                return joined
            except RequestError as exc:
                logger.warning("could not join %r again after reconnecting: %s", room, exc)
                self.state.drop_room(room)
                await call_hook(self._on_error, exc)
            except EventBusError as exc:  # CallTimeout: keep the room for next time
                logger.warning("could not join %r again after reconnecting: %s", room, exc)
        return joined

    # --- what arrives ---------------------------------------------------------------------

    async def _on_packet(self, link: Any, packet: Packet) -> None:
        routed = route(self.state, link, packet, ready=self._link is link)
        if isinstance(routed, RoomDelivery):
            incoming = routed.incoming
            for subscription in self._subscriptions:
                if incoming.room in subscription.rooms:
                    subscription._push(incoming)
            handler = self._handlers.get(incoming.event)
            if handler is not None:
                await self._notify(handler, incoming)
        elif isinstance(routed, Answered):
            pending = link.pending.get(routed.ack_id)
            if pending is not None:  # else: a late answer to a request that timed out
                pending.resolve(routed.data)
                position = position_from(routed.data)
                if pending.position_of is not None and position is not None:
                    # Recorded by the reader, in order with the room's events.
                    self.state.record_position(pending.position_of, position)
        elif isinstance(routed, Failed):
            pending = link.pending.get(routed.ack_id)
            if pending is not None:
                pending.reject(routed.error)
        elif isinstance(routed, ServerError):
            if not await call_hook(self._on_error, routed.error):
                logger.warning("%s reported an error: %s", self._target, routed.error)
        elif isinstance(routed, Direct):
            await self._on_event(link, routed)
        elif isinstance(routed, GapReport):
            await self._report_gap(routed)
        elif routed.why.startswith("an unexpected"):
            logger.warning("ignoring %s from %s", routed.why, self._target)

    async def _on_event(self, link: Any, routed: Direct) -> None:
        incoming = routed.incoming
        handler = self._handlers.get(incoming.event)
        if routed.ack_id is None:
            if handler is not None:
                await self._notify(handler, incoming)
            return
        reply = await answer(handler, incoming, routed.ack_id)
        try:
            payload = link.encode(reply)
        except LocalProtocolError as exc:
            logger.warning("the answer to server call %r cannot be sent: %s", incoming.event,
                           exc)
            payload = link.encode(ErrorReply(routed.ack_id, exc.code, exc.message[:1024]))
        with suppress(ConnectionClosed):  # the next read reports the loss
            await link.send(payload)

    async def _notify(self, handler: Handler, incoming: Incoming) -> None:
        try:
            await handler.run(incoming)
        except Exception:
            logger.exception("handler for event %r failed", incoming.event)

    async def _report_gap(self, gap: GapReport) -> None:
        for subscription in self._subscriptions:
            if gap.room in subscription.rooms:
                subscription.missed += gap.count
        if not await call_hook(self._on_gap, gap.room, gap.count):
            where = f"room {gap.room!r}" if gap.room is not None else "direct events"
            logger.warning("%s dropped %d messages for this client (%s)", self._target,
                           gap.count, where)
