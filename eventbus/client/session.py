"""The machinery under a :class:`~.client.Client`: links, reconnection, reading.

Structure: ``open_client`` owns one nursery. In it, the *supervisor* task
(:meth:`Session._run`) opens a connection, reads the WELCOME, and serves the
resulting :class:`~.link.Link` with two tasks of its own: the *reader* (decodes
each packet, resolves pending requests, runs handlers, fills subscriptions) and
the *watchdog* (pings when the server has been silent, declares the link dead
after ``ping_interval + ping_timeout``). When the link ends, the supervisor
decides from the close code whether to reconnect, waits with backoff, connects
again and rejoins the rooms. Every wait is bounded by a timeout or by the
client's lifetime.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping
from contextlib import suppress
from functools import partial
from types import MappingProxyType
from typing import Any

import attrs
import trio
import trio_websocket

from ..codes import CloseCode
from ..errors import (
    CallTimeout,
    ConnectionClosed,
    EventBusError,
    HandshakeRejected,
    LocalProtocolError,
    RemoteProtocolError,
    RequestError,
    ResumeFailed,
    error_from_code,
)
from ..protocol import (
    Ack,
    ErrorReply,
    Event,
    Gap,
    Join,
    Leave,
    Packet,
    Position,
    Resume,
    Role,
    RoomEvent,
    Welcome,
    codec_for_subprotocol,
)
from .backoff import Backoff
from .handlers import Handler, answer, call_hook
from .link import Link, Pending, closed_copy
from .messages import Incoming, Recovery
from .subscription import Subscription
from .transport import Opener, map_exceptions

__all__ = ["NO_RECONNECT_CLOSE_CODES", "Session", "position_from"]

logger = logging.getLogger("eventbus.client")

_REPEATS = "; reconnecting would repeat it"
#: The close codes after which the client stops instead of reconnecting, with why
#: (PROTOCOL.md section 14). After any other close, and after a connection lost
#: without a close frame (1006), it reconnects with backoff. The codes that mean
#: this client broke the protocol stop it too: a reconnection would break it the
#: same way, and a buggy client would become a reconnection loop. eventbus.js
#: stops after the same codes (its FINAL_CLOSE_CODES).
NO_RECONNECT_CLOSE_CODES: Mapping[int, str] = MappingProxyType({
    CloseCode.NORMAL: "the server's application closed the connection on purpose",
    CloseCode.PROTOCOL_ERROR: "this client broke the WebSocket framing rules" + _REPEATS,
    CloseCode.INVALID_DATA: "this client sent a text frame that is not UTF-8" + _REPEATS,
    CloseCode.MESSAGE_TOO_BIG: "this client sent a message over max_frame" + _REPEATS,
    CloseCode.TOO_MANY_ERRORS: "this client sent too many invalid packets" + _REPEATS,
    CloseCode.UNAUTHORIZED: "the server revoked the authorization; get new credentials",
    CloseCode.SESSION_TAKEN_OVER: "another connection resumed this session",
})


class Session:
    """The state and tasks of a client across its connections; the public API is
    :class:`~.client.Client`, which adds the requests and registrations."""

    def __init__(
        self, opener: Opener, *, target: str, reconnect: bool | Backoff,
        request_timeout: float, connect_timeout: float, wait_reconnect: float,
        close_timeout: float, offline_limit: int = 1000,
    ) -> None:
        self._opener = opener
        self._target = target
        self.backoff: Backoff | None = (
            Backoff() if reconnect is True else reconnect if isinstance(reconnect, Backoff)
            else None
        )
        self.request_timeout = request_timeout
        self.connect_timeout = connect_timeout
        self.wait_reconnect = wait_reconnect
        #: Operations that may wait for a reconnection at once; more fail at once.
        self.offline_limit = offline_limit
        self._offline = 0
        self.close_timeout = close_timeout
        self._handlers: dict[str, Handler] = {}
        self._on_gap: Callable[..., Any] | None = None
        self._on_error: Callable[..., Any] | None = None
        self._on_reconnect: Callable[..., Any] | None = None
        self._on_disconnect: Callable[..., Any] | None = None
        self._on_resume: Callable[..., Any] | None = None
        self._explicit: set[str] = set()
        self._held: Counter[str] = Counter()
        self._positions: dict[str, Position] = {}
        self._subscriptions: list[Subscription] = []
        self._current: Link | None = None  # the link being served, ready or not
        self._link: Link | None = None  # the link requests may use (rooms rejoined)
        self._changed = trio.lowlevel.ParkingLot()
        self._started = False
        self._closing = False
        self._final: ConnectionClosed | None = None
        self._reconnects = 0
        self._missed = 0
        self._duplicates = 0
        # The sid and token of the last connection that finished setting up: what
        # the next one resumes (PROTOCOL.md section 9).
        self._previous: tuple[str, str] | None = None
        #: Seconds a RESUME may take, replay included.
        self.resume_timeout = max(60.0, request_timeout)
        # Counts the server sessions this client has had: a publish is sent again
        # after a lost answer only within one (its publish id means nothing in another).
        self.generation = 0
        self._next_publish_id = 1
        #: The verdicts of the last RESUME, by room.
        self.recoveries: dict[str, Recovery] = {}

    @property
    def rooms(self) -> frozenset[str]:
        """The rooms this client is in (joined, or held by a subscription); they are
        joined again after a reconnect."""
        return frozenset(self._explicit) | frozenset(self._held)

    # --- requests on a link ------------------------------------------------------

    async def _request_on(
        self, link: Link, make: Callable[[int], Packet], timeout: float | None, what: str,
        *, position_of: str | None = None,
    ) -> Any:
        """Send a request on ``link`` and wait for its answer.

        Args:
            position_of: The room whose position the ACK carries; the reader records
                it (see :meth:`_record_position`).
        """
        if self._in_reader(link):
            raise RuntimeError(
                f"cannot {what} and wait for its answer inside an event handler: the answer "
                "is read by the task that runs the handler. Start a task for it instead."
            )
        limit = self.request_timeout if timeout is None else timeout
        deadline = trio.current_time() + limit
        slots = link.slots
        if slots is not None:
            with trio.move_on_at(deadline) as waiting:
                await slots.acquire()
            if waiting.cancelled_caught:
                raise CallTimeout(f"no answer to {what} within {limit:g} s (it waited behind "
                                  f"{len(link.pending)} requests, the server's max_pending)")
            if link.error is not None:
                slots.release()
                raise closed_copy(link.error)
        try:
            ack_id = link.allocate()
            payload = link.encode(make(ack_id))
            pending = link.pending[ack_id] = Pending(position_of)
            try:
                # Not under the deadline: a send cut short would break the stream.
                await link.send(payload)
                with trio.move_on_at(deadline):
                    await pending.done.wait()
            finally:
                link.pending.pop(ack_id, None)
        finally:
            if slots is not None:
                slots.release()
        if not pending.done.is_set():
            raise CallTimeout(f"no answer to {what} within {limit:g} s")
        if pending.error is not None:
            raise pending.error
        return pending.value

    def _record_position(self, room: str, position: Position) -> None:
        """Record ``position`` as the last one seen in ``room``.

        Only the reader calls this, as it reads ROOM_EVENTs and the ACKs of JOIN and
        PUBLISH: recording when the requester wakes up instead could overwrite a
        later ROOM_EVENT the reader got to first. Within an epoch a position only
        moves forward, since the server may write a ROOM_EVENT ahead of the ACK of
        an earlier position; a new epoch replaces it, because positions of
        different epochs cannot be compared (PROTOCOL.md section 8) and the new
        one is the room's current history. A room the client is no longer in is
        not recorded: RESUME must not name it.
        """
        if room not in self.rooms:
            return
        known = self._positions.get(room)
        if known is None or known.epoch != position.epoch or known.seq < position.seq:
            self._positions[room] = position

    def _in_reader(self, link: Link) -> bool:
        return trio.lowlevel.current_task() is link.reader

    async def _wait_link(self) -> Link:
        current = self._current
        if current is not None and self._in_reader(current):
            return current  # a handler emitting while the rooms are being rejoined
        if self._link is not None:
            return self._link
        if self._final is not None:
            raise closed_copy(self._final)
        if self._offline >= self.offline_limit:
            raise ConnectionClosed(
                f"not connected to {self._target}, and {self._offline} operations already"
                f" wait for the reconnection (offline_limit): not queued")
        self._offline += 1
        try:
            with trio.move_on_after(self.wait_reconnect):
                while True:
                    if self._link is not None:
                        return self._link
                    if self._final is not None:
                        raise closed_copy(self._final)
                    await self._changed.park()
        finally:
            self._offline -= 1
        raise ConnectionClosed(
            f"not connected to {self._target}: no reconnection within {self.wait_reconnect:g} s"
        )

    def _finish(self, error: ConnectionClosed) -> None:
        if self._final is None:
            self._final = error
        self._link = None
        for subscription in self._subscriptions:
            subscription._fail(error)
        self._changed.unpark_all()

    def _lose(self, link: Link, error: ConnectionClosed) -> None:
        if link.fail(error):
            if self._link is link:
                self._link = None
            self._changed.unpark_all()

    # --- the supervisor -----------------------------------------------------------------

    async def _run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        failures = 0
        while True:
            link: Link | None = None
            error: ConnectionClosed | HandshakeRejected
            try:
                with map_exceptions(self._target):
                    async with self._opener() as ws:
                        link = await self._open_link(ws)
                        await self._serve(link, task_status)
                error = link.error or ConnectionClosed("connection closed")
            except (ConnectionClosed, HandshakeRejected) as exc:
                if not self._started:
                    raise
                error = exc
            if link is not None:
                # The link's own record of why it ended beats the error of closing it.
                self._lose(link, error if isinstance(error, ConnectionClosed)
                           else ConnectionClosed(str(error)))
                assert link.error is not None
                error = link.error
                self._current = None
                if trio.current_time() - link.began >= self._reset_after:
                    failures = 0
            if self._closing:
                return
            if link is not None:
                await call_hook(self._on_disconnect, error)
            verdict = self._verdict(error)
            if verdict is None and self.backoff is not None and self.backoff.gives_up(failures):
                verdict = f"gave up after {failures} attempts"
            if verdict is not None:
                final = _closed_because(error, verdict)
                logger.warning("not reconnecting to %s: %s", self._target, final)
                self._finish(final)
                return
            assert self.backoff is not None
            delay = self.backoff.delay(failures)
            failures += 1
            if link is not None:
                logger.warning("connection to %s lost (%s); reconnecting in %.2f s",
                               self._target, error, delay)
            else:
                logger.info("reconnecting to %s failed (%s); next attempt in %.2f s",
                            self._target, error, delay)
            await trio.sleep(delay)

    @property
    def _reset_after(self) -> float:
        return self.backoff.reset_after if self.backoff is not None else 0.0

    def _verdict(self, error: ConnectionClosed | HandshakeRejected) -> str | None:
        """Why not to reconnect after ``error``, or ``None`` to reconnect."""
        if self.backoff is None:
            return "reconnection is off"
        if isinstance(error, HandshakeRejected):
            if 400 <= error.status < 500 and error.status not in (408, 429):
                return f"the server refused the handshake ({error})"
            return None
        code = error.close_code
        return NO_RECONNECT_CLOSE_CODES.get(code) if code is not None else None

    async def _open_link(self, ws: trio_websocket.WebSocketConnection) -> Link:
        try:
            codec = codec_for_subprotocol(ws.subprotocol)(Role.CLIENT)
        except KeyError:
            raise ConnectionClosed(
                f"{self._target} chose subprotocol {ws.subprotocol!r}, which was not offered"
            ) from None
        welcome: Packet | None = None
        with trio.move_on_after(self.connect_timeout):
            message = await ws.get_message()
            try:
                welcome = codec.decode(message)
            except RemoteProtocolError as exc:
                raise ConnectionClosed(f"{self._target} sent an invalid welcome: {exc}") from exc
        if welcome is None:
            raise ConnectionClosed(f"no welcome from {self._target} within "
                                   f"{self.connect_timeout:g} s")
        if not isinstance(welcome, Welcome):
            raise ConnectionClosed(f"{self._target} sent {type(welcome).__name__} before "
                                   "its welcome")
        link = Link(ws, codec, welcome, self._target)
        self._current = link
        return link

    async def _serve(self, link: Link, task_status: trio.TaskStatus[None]) -> None:
        with link.scope:
            async with trio.open_nursery() as nursery:
                await nursery.start(self._read, link)
                nursery.start_soon(self._watch, link)
                verdicts: dict[str, Recovery] = {}
                if self._started:
                    verdicts = await self._resume(link)
                else:
                    self.generation += 1
                link.generation = self.generation
                if link.error is None:
                    self._link = link
                    self._previous = (link.welcome.sid, link.token)
                    self._changed.unpark_all()
                if not self._started:
                    self._started = True
                    task_status.started()
                else:
                    self._reconnects += 1
                    logger.info("reconnected to %s", self._target)
                    # Once the link is ready: a hook may make requests (refetch state).
                    if verdicts:
                        await call_hook(self._on_resume, MappingProxyType(verdicts))
                    await call_hook(self._on_reconnect)

    async def _resume(self, link: Link) -> dict[str, Recovery]:
        """Continue the session on a new connection: RESUME with the last position
        of each room, which the server replays from (PROTOCOL.md section 9); the
        rooms it cannot resume, and every room when it refuses the RESUME, are
        joined again. Returns each room's verdict (for the ``on_resume`` hook)."""
        previous = self._previous
        rooms = sorted(self.rooms)
        positions = {room: self._positions[room] for room in rooms if room in self._positions}
        verdicts: dict[str, Recovery] = {}
        again: list[str] = [room for room in rooms if room not in positions]
        try:
            if previous is None:
                raise ResumeFailed("no session to resume")
            answer = await self._request_on(
                link, partial(Resume, previous[0], previous[1], positions), self.resume_timeout,
                "resume the session")
        except ConnectionClosed:
            return {}
        except ResumeFailed as exc:
            logger.warning("%s did not resume the session (%s): joining the rooms again",
                           self._target, exc.message)
            self.generation += 1
            verdicts = {room: Recovery(room, False, reason="resume_failed") for room in rooms}
            again = rooms
        except EventBusError as exc:
            # Without its answer the seam is unknown: start again on a new connection.
            self._lose(link, ConnectionClosed(f"could not resume the session: {exc}"))
            return {}
        else:
            for room, verdict in (answer.items() if isinstance(answer, dict) else ()):
                if room not in positions or not isinstance(verdict, dict):
                    continue
                recovery = _recovery(room, verdict)
                verdicts[room] = recovery
                if recovery.position is not None:
                    self._record_position(room, recovery.position)
                elif recovery.reason == "unavailable":
                    again.append(room)
                else:
                    self._drop_room(room)
            for room in positions:
                if room not in verdicts:
                    again.append(room)  # no verdict: a JOIN says where it stands
            for room, recovery in list(verdicts.items()):
                if room not in self.rooms and recovery.position is not None:
                    # Left while the RESUME was on its way.
                    with suppress(EventBusError):
                        await self._request_on(link, partial(Leave, room), None,
                                               f"leave {room!r}")
        joined = await self._rejoin(link, sorted(again))
        for room, position in joined.items():
            if room in verdicts:
                # Back in the room, not recovered: where it stands now.
                verdicts[room] = attrs.evolve(verdicts[room], position=position)
        self.recoveries = verdicts
        return verdicts

    def _drop_room(self, room: str) -> None:
        self._explicit.discard(room)
        self._held.pop(room, None)
        self._positions.pop(room, None)

    async def _rejoin(self, link: Link, rooms: list[str]) -> dict[str, Position]:
        """Join rooms again on a new connection (those a RESUME did not give back);
        returns where each joined room stands."""
        joined: dict[str, Position] = {}
        for room in rooms:
            try:
                answer = await self._request_on(link, partial(Join, room), None,
                                                f"join {room!r}", position_of=room)
                if room not in self.rooms:  # left while the join was on its way
                    await self._request_on(link, partial(Leave, room), None, f"leave {room!r}")
                    continue
                position = position_from(answer)
                if position is not None:
                    joined[room] = position
            except ConnectionClosed:
                return joined
            except RequestError as exc:
                logger.warning("could not join %r again after reconnecting: %s", room, exc)
                self._drop_room(room)
                await call_hook(self._on_error, exc)
                continue
            except EventBusError as exc:  # CallTimeout: keep the room for next time
                logger.warning("could not join %r again after reconnecting: %s", room, exc)
        return joined

    # --- the reader ---------------------------------------------------------------------

    async def _read(self, link: Link, task_status: trio.TaskStatus[None]) -> None:
        link.reader = trio.lowlevel.current_task()
        task_status.started()
        try:
            while True:
                with map_exceptions(self._target):
                    message = await link.ws.get_message()
                link.last_heard = trio.current_time()
                try:
                    packet = link.codec.decode(message)
                except RemoteProtocolError as exc:
                    logger.warning("ignoring an invalid packet from %s: %s", self._target, exc)
                    continue
                await self._on_packet(link, packet)
        except ConnectionClosed as exc:
            self._lose(link, exc)

    async def _on_packet(self, link: Link, packet: Packet) -> None:
        if isinstance(packet, RoomEvent):
            await self._on_room_event(packet)
        elif isinstance(packet, Ack):
            pending = link.pending.get(packet.ack_id)
            if pending is not None:  # else: a late answer to a request that timed out
                pending.resolve(packet.data)
                position = position_from(packet.data)
                if pending.position_of is not None and position is not None:
                    self._record_position(pending.position_of, position)
        elif isinstance(packet, ErrorReply):
            error = error_from_code(packet.code, packet.message)
            if packet.ack_id is not None:
                pending = link.pending.get(packet.ack_id)
                if pending is not None:
                    pending.reject(error)
            elif not await call_hook(self._on_error, error):
                logger.warning("%s reported an error: %s", self._target, error)
        elif isinstance(packet, Event):
            await self._on_event(link, packet)
        elif isinstance(packet, Gap):
            await self._on_gap_packet(packet)
        else:
            logger.warning("ignoring an unexpected %s from %s", type(packet).__name__,
                           self._target)

    async def _on_room_event(self, packet: RoomEvent) -> None:
        room = packet.room
        known = self._positions.get(room)
        if known is not None and known.epoch == packet.epoch and packet.seq <= known.seq:
            # Seen already, or before where the client joined: the second guard
            # against a repeat (PROTOCOL.md section 8; the server sends none).
            self._duplicates += 1
            return
        self._record_position(room, packet.position)
        incoming = Incoming(room, packet.event, packet.data, packet.epoch, packet.seq)
        for subscription in self._subscriptions:
            if room in subscription.rooms:
                subscription._push(incoming)
        handler = self._handlers.get(packet.event)
        if handler is not None:
            await self._notify(handler, incoming)

    async def _on_event(self, link: Link, packet: Event) -> None:
        if (packet.event == "$resume_token" and packet.ack_id is None
                and isinstance(packet.data, str)):
            link.token = packet.data  # the client's own business, not the app's
            if self._link is link:
                self._previous = (link.welcome.sid, link.token)
            return
        incoming = Incoming(None, packet.event, packet.data)
        handler = self._handlers.get(packet.event)
        if packet.ack_id is None:
            if handler is not None:
                await self._notify(handler, incoming)
            return
        reply = await answer(handler, incoming, packet.ack_id)
        try:
            payload = link.encode(reply)
        except LocalProtocolError as exc:
            logger.warning("the answer to server call %r cannot be sent: %s", packet.event, exc)
            payload = link.encode(ErrorReply(packet.ack_id, exc.code, exc.message[:1024]))
        with suppress(ConnectionClosed):  # the next read reports the loss
            await link.send(payload)

    async def _notify(self, handler: Handler, incoming: Incoming) -> None:
        try:
            await handler.run(incoming)
        except Exception:
            logger.exception("handler for event %r failed", incoming.event)

    async def _on_gap_packet(self, packet: Gap) -> None:
        self._missed += packet.count
        for subscription in self._subscriptions:
            if packet.room in subscription.rooms:
                subscription.missed += packet.count
        if not await call_hook(self._on_gap, packet.room, packet.count):
            where = f"room {packet.room!r}" if packet.room is not None else "direct events"
            logger.warning("%s dropped %d messages for this client (%s)", self._target,
                           packet.count, where)

    # --- the watchdog -------------------------------------------------------------------

    async def _watch(self, link: Link) -> None:
        """Ping after ``ping_interval`` of silence; no pong within ``ping_timeout``
        means the connection is dead (PROTOCOL.md section 11)."""
        options = link.welcome.options
        interval = options.ping_interval / 1000
        timeout = options.ping_timeout / 1000
        if interval <= 0 or timeout <= 0:
            return
        while True:
            await trio.sleep_until(link.last_heard + interval)
            if trio.current_time() < link.last_heard + interval:
                continue
            with trio.move_on_after(timeout):
                try:
                    await link.ws.ping()
                except trio_websocket.ConnectionClosed:
                    return  # the reader reports it
                link.last_heard = trio.current_time()
                continue
            self._lose(link, ConnectionClosed(
                f"{self._target} was silent for {interval + timeout:g} s (ping_interval + "
                "ping_timeout): the connection is dead", close_code=1006,
            ))
            return


def _recovery(room: str, verdict: dict[str, Any]) -> Recovery:
    recovered = verdict.get("recovered") is True
    replayed = verdict.get("replayed")
    reason = verdict.get("reason")
    return Recovery(
        room, recovered, replayed if type(replayed) is int and recovered else 0,
        None if recovered else reason if isinstance(reason, str) else "unknown",
        position_from(verdict.get("position")))


def position_from(value: Any) -> Position | None:
    if (type(value) is list and len(value) == 2 and type(value[0]) is str
            and type(value[1]) is int):
        return Position(value[0], value[1])
    return None


def _closed_because(error: ConnectionClosed | HandshakeRejected, why: str) -> ConnectionClosed:
    if isinstance(error, ConnectionClosed):
        closed = ConnectionClosed(f"connection to the server closed; {why}",
                                  close_code=error.close_code, reason=error.reason)
    else:
        closed = ConnectionClosed(f"reconnecting failed; {why}")
    closed.__cause__ = error
    return closed
