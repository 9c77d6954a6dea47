"""The trio client: connect, emit, call, rooms, subscriptions, reconnection.

Structure: :func:`connect` owns one nursery. In it, the *supervisor* task opens a
connection, reads the WELCOME, and serves the resulting :class:`~.link.Link` with
two tasks of its own, the *reader* (decodes each packet, resolves pending
requests, runs handlers, fills subscriptions) and the *watchdog* (pings when the
server has been silent, declares the link dead after ``ping_interval +
ping_timeout``). When the link ends, the supervisor decides from the close code
whether to reconnect, waits with backoff, connects again and rejoins the rooms.
Every wait is bounded by a timeout or by the client's lifetime.
"""

from __future__ import annotations

import logging
import ssl
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from functools import partial
from typing import Any, TypeVar

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
    error_from_code,
)
from ..protocol import (
    JSON_SUBPROTOCOL,
    MSGPACK_SUBPROTOCOL,
    NAME_MAX_BYTES,
    Ack,
    Emit,
    ErrorReply,
    Event,
    Gap,
    Join,
    Leave,
    Packet,
    Position,
    Publish,
    Role,
    RoomEvent,
    Welcome,
    WelcomeOptions,
    check_name,
    codec_for_subprotocol,
)
from .backoff import Backoff
from .handlers import Handler, answer, call_hook
from .link import Link, Pending, closed_copy
from .messages import Incoming
from .subscription import Subscription
from .transport import (
    MAX_MESSAGE_SIZE,
    Headers,
    Opener,
    collapse_groups,
    encode_headers,
    map_exceptions,
    url_opener,
)

__all__ = ["Client", "connect", "open_client"]

logger = logging.getLogger("eventbus.client")

F = TypeVar("F", bound=Callable[..., Any])

_SUBPROTOCOLS = {"json": JSON_SUBPROTOCOL, "msgpack": MSGPACK_SUBPROTOCOL}
#: Close codes after which reconnecting is pointless or forbidden (PROTOCOL.md §14).
_FINAL_CLOSE_CODES = frozenset({CloseCode.NORMAL, CloseCode.UNAUTHORIZED,
                                CloseCode.SESSION_TAKEN_OVER})
#: Close codes that mean this client broke a rule: reconnect, but say so.
_CLIENT_BUG_CLOSE_CODES = frozenset({CloseCode.PROTOCOL_ERROR, CloseCode.INVALID_DATA,
                                     CloseCode.MESSAGE_TOO_BIG, CloseCode.TOO_MANY_ERRORS})


def subprotocols_for(codec: str) -> list[str]:
    """The subprotocol list a client with codec ``"json"`` or ``"msgpack"`` offers."""
    try:
        return [_SUBPROTOCOLS[codec]]
    except KeyError:
        raise ValueError(f"codec must be 'json' or 'msgpack', not {codec!r}") from None


class Client:
    """A connection to an eventbus server that survives reconnections.

    Do not create one directly: use :func:`connect` (or
    :func:`eventbus.testing.connect`), which runs it for the length of an
    ``async with`` block.

    While the client is reconnecting, every operation that needs the connection
    (:meth:`emit`, :meth:`call`, :meth:`join`, :meth:`publish`) waits up to
    ``wait_reconnect`` seconds for it to come back, then raises
    :class:`~eventbus.ConnectionClosed`. Once the client has stopped for good
    (reconnection off, close code 1000/4003/4004, handshake refused with a 4xx,
    ``max_attempts`` reached, or the block exited) they raise it at once.

    Handlers registered with :meth:`on` run in the client's reader task, one at a
    time, in arrival order: keep them short. Inside a handler, :meth:`emit` works
    but waiting for an answer (:meth:`call`, :meth:`join`, :meth:`leave`,
    :meth:`publish`) raises ``RuntimeError``, because the answer could only be read
    after the handler returns; start a task in a nursery of your own instead.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self, opener: Opener, *, target: str, reconnect: bool | Backoff = True,
        request_timeout: float = 10.0, connect_timeout: float = 10.0,
        wait_reconnect: float = 10.0, close_timeout: float = 2.0,
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
        self.close_timeout = close_timeout
        self._handlers: dict[str, Handler] = {}
        self._on_gap: Callable[..., Any] | None = None
        self._on_error: Callable[..., Any] | None = None
        self._on_reconnect: Callable[..., Any] | None = None
        self._on_disconnect: Callable[..., Any] | None = None
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

    def __repr__(self) -> str:
        state = "connected" if self._link else "closed" if self._final else "reconnecting"
        return f"<Client {self._target} {state} rooms={sorted(self.rooms)}>"

    # --- state ------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether a connection is up and its rooms are joined."""
        return self._link is not None

    @property
    def closed(self) -> bool:
        """Whether the client has stopped for good (it will not reconnect)."""
        return self._final is not None

    @property
    def sid(self) -> str | None:
        """The session id of the current connection (it changes on reconnect)."""
        return self._current.welcome.sid if self._current is not None else None

    @property
    def codec(self) -> str | None:
        """The codec the server chose for the current connection: json or msgpack."""
        return self._current.codec.name if self._current is not None else None

    @property
    def options(self) -> WelcomeOptions | None:
        """The server's settings from the current connection's WELCOME."""
        return self._current.welcome.options if self._current is not None else None

    @property
    def rooms(self) -> frozenset[str]:
        """The rooms this client is in (joined, or held by a subscription); they are
        joined again after a reconnect."""
        return frozenset(self._explicit) | frozenset(self._held)

    @property
    def positions(self) -> Mapping[str, Position]:
        """The last position seen per room, from JOIN and PUBLISH acks and room
        events, as RESUME will need it."""
        return dict(self._positions)

    def statistics(self) -> dict[str, int]:
        """Counters: ``reconnects``, ``missed`` (dropped by the server, from GAP),
        ``dropped`` (by full subscription buffers), ``pending`` requests."""
        link = self._current
        return {
            "reconnects": self._reconnects,
            "missed": self._missed,
            "dropped": sum(sub.dropped for sub in self._subscriptions),
            "pending": len(link.pending) if link is not None else 0,
        }

    # --- registration -------------------------------------------------------------------

    def on(self, event: str) -> Callable[[F], F]:
        """Register a handler for ``event``, for direct events and room events alike.

        The handler is ``handler(data)`` or ``handler(data, incoming)`` (an
        :class:`Incoming`, whose ``room`` is ``None`` for a direct event), sync or
        async. For a server call (a direct event with an ack id) its return value is
        the answer; raising a :class:`~eventbus.RequestError` answers with its code,
        any other exception with ``internal_error`` (and is logged). For other
        events the return value is ignored and exceptions are logged. A server
        call without a handler is answered ``unknown_event``.
        """
        check_name(event, "event", NAME_MAX_BYTES, reserved_ok=True)

        def register(func: F) -> F:
            self._handlers[event] = Handler(func)
            return func

        return register

    def on_gap(self, func: F) -> F:
        """Register ``hook(room, count)``: the server dropped ``count`` messages for
        this client in ``room`` (``None``: direct events). Without a hook, a warning
        is logged. Either way :meth:`statistics` counts them."""
        self._on_gap = func
        return func

    def on_error(self, func: F) -> F:
        """Register ``hook(error)`` for errors that answer no request: an ERROR packet
        with a null ack id (a :class:`~eventbus.RequestError` subclass), or a room
        that could not be joined again after a reconnect. Without a hook, a warning
        is logged."""
        self._on_error = func
        return func

    def on_reconnect(self, func: F) -> F:
        """Register ``hook()``, run after each reconnection once the rooms are joined
        again (not after the first connection)."""
        self._on_reconnect = func
        return func

    def on_disconnect(self, func: F) -> F:
        """Register ``hook(error)``, run when a connection is lost (``error`` is a
        :class:`~eventbus.ConnectionClosed`), before any reconnection."""
        self._on_disconnect = func
        return func

    # --- requests -----------------------------------------------------------------------

    async def emit(self, event: str, data: Any = None) -> None:
        """Send an event to the server's handler, asking for no answer.

        Errors about it arrive later as an ERROR with a null ack id (see
        :meth:`on_error`). While reconnecting, waits up to ``wait_reconnect``.

        Raises:
            LocalProtocolError: the name or data cannot be sent (binary data under
                JSON, a reserved ``$`` name...); nothing was sent.
            ConnectionClosed: not connected, and no reconnection in time.
        """
        self._check_name(event, "event")
        link = await self._wait_link()
        await link.send(link.encode(Emit(event, data)))

    async def call(self, event: str, data: Any = None, *, timeout: float | None = None) -> Any:
        """Send an event to the server's handler and return its answer.

        Args:
            timeout: Seconds to wait for the answer once sent (default: the
                client's ``request_timeout``).

        Raises:
            RequestError: the server answered with an error; the subclass matches
                its code (:func:`~eventbus.errors.error_from_code`).
            CallTimeout: no answer within ``timeout``.
            ConnectionClosed: the connection was lost before the answer (at once,
                not after the timeout), or could not be had in time.
            LocalProtocolError: the request cannot be sent; nothing was sent.
        """
        self._check_name(event, "event")
        return await self._request(partial(Emit, event, data), timeout, f"call {event!r}")

    async def join(self, room: str, *, timeout: float | None = None) -> Position:
        """Join a room; returns its current position. The room is joined again after
        each reconnect until :meth:`leave`.

        Raises:
            Forbidden: the server refused (the room is then not remembered).
            TooManyRooms, CallTimeout, ConnectionClosed: as for :meth:`call`.
        """
        self._check_name(room, "room")
        known = room in self.rooms
        self._explicit.add(room)
        try:
            return await self._join_now(room, timeout)
        except BaseException:
            if not known:
                self._explicit.discard(room)
            raise

    async def leave(self, room: str, *, timeout: float | None = None) -> None:
        """Leave a room, and stop rejoining it after reconnects.

        If a subscription still holds the room, the client stays in it until that
        subscription ends. If the client is not connected, returns at once: there
        is nothing to leave, and the room will not be joined again.
        """
        self._check_name(room, "room")
        self._explicit.discard(room)
        if self._held[room]:
            return
        self._positions.pop(room, None)
        link = self._link
        if link is not None:
            await self._request_on(link, partial(Leave, room), timeout, f"leave {room!r}")

    async def publish(
        self, room: str, event: str, data: Any = None, *, timeout: float | None = None
    ) -> Position | None:
        """Send an event to every member of ``room`` except this client.

        Returns:
            The position the message got, or ``None`` if the room had no members.

        Raises:
            Forbidden: the server does not let this client publish there.
            CallTimeout, ConnectionClosed, LocalProtocolError: as for :meth:`call`.
        """
        self._check_name(room, "room")
        self._check_name(event, "event")
        result = await self._request(partial(Publish, room, event, data), timeout,
                                     f"publish to {room!r}")
        position = _position(result)
        if position is not None and room in self.rooms:
            self._positions[room] = position
        return position

    @asynccontextmanager
    async def subscribe(self, *rooms: str, buffer: int = 1000) -> AsyncIterator[Subscription]:
        """Join ``rooms`` and yield a :class:`Subscription` of their events; leave
        them on exit (unless joined with :meth:`join` or held by another
        subscription).

        ``async for event in subscription`` yields :class:`Incoming` values in
        arrival order. ``buffer`` bounds the events waiting to be read; when it is
        full the oldest is dropped and counted (see :class:`Subscription`).
        """
        if not rooms:
            raise ValueError("subscribe to at least one room")
        for room in rooms:
            self._check_name(room, "room")
        subscription = Subscription(rooms, buffer)
        # Registered first, so that nothing sent after the JOIN ack is missed.
        self._subscriptions.append(subscription)
        held: list[str] = []
        try:
            for room in sorted(subscription.rooms):
                joined = room in self.rooms
                self._held[room] += 1
                held.append(room)
                if not joined:
                    await self._join_now(room, None)
            yield subscription
        finally:
            self._subscriptions.remove(subscription)
            subscription._end()
            with trio.CancelScope(shield=True), trio.move_on_after(self.close_timeout):
                await self._release(held)

    async def _release(self, rooms: list[str]) -> None:
        for room in rooms:
            self._held[room] -= 1
            if self._held[room] <= 0:
                del self._held[room]
                if room not in self._explicit:
                    self._positions.pop(room, None)
                    link = self._link
                    if link is not None and not self._in_reader(link):
                        try:
                            await self._request_on(link, partial(Leave, room), None,
                                                   f"leave {room!r}")
                        except EventBusError as exc:
                            logger.warning("could not leave %r: %s", room, exc)

    async def _join_now(self, room: str, timeout: float | None) -> Position:
        result = await self._request(partial(Join, room), timeout, f"join {room!r}")
        position = _position(result)
        if position is None:
            raise RemoteProtocolError(f"the server answered a join with {result!r}, "
                                      "not a position")
        self._positions[room] = position
        return position

    async def _request(
        self, make: Callable[[int], Packet], timeout: float | None, what: str
    ) -> Any:
        link = await self._wait_link()
        return await self._request_on(link, make, timeout, what)

    async def _request_on(
        self, link: Link, make: Callable[[int], Packet], timeout: float | None, what: str
    ) -> Any:
        if self._in_reader(link):
            raise RuntimeError(
                f"cannot {what} and wait for its answer inside an event handler: the answer "
                "is read by the task that runs the handler. Start a task for it instead."
            )
        ack_id = link.allocate()
        payload = link.encode(make(ack_id))
        pending = link.pending[ack_id] = Pending()
        limit = self.request_timeout if timeout is None else timeout
        try:
            await link.send(payload)
            with trio.move_on_after(limit):
                await pending.done.wait()
        finally:
            link.pending.pop(ack_id, None)
        if not pending.done.is_set():
            raise CallTimeout(f"no answer to {what} within {limit:g} s")
        if pending.error is not None:
            raise pending.error
        return pending.value

    def _in_reader(self, link: Link) -> bool:
        return trio.lowlevel.current_task() is link.reader

    async def _wait_link(self) -> Link:
        current = self._current
        if current is not None and self._in_reader(current):
            return current  # a handler emitting while the rooms are being rejoined
        with trio.move_on_after(self.wait_reconnect):
            while True:
                if self._link is not None:
                    return self._link
                if self._final is not None:
                    raise closed_copy(self._final)
                await self._changed.park()
        raise ConnectionClosed(
            f"not connected to {self._target}: no reconnection within {self.wait_reconnect:g} s"
        )

    def _check_name(self, name: str, what: str) -> None:
        options = self.options
        limit = NAME_MAX_BYTES
        if options is not None and 0 < options.max_name < NAME_MAX_BYTES:
            limit = options.max_name
        try:
            check_name(name, what, limit, reserved_ok=False)
        except RemoteProtocolError as exc:
            raise LocalProtocolError(exc.message, code=exc.code) from None

    # --- closing ------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the connection (code 1000) and stop reconnecting; idempotent."""
        if self._closing:
            return
        self._closing = True
        link = self._current
        if link is not None and link.error is None:
            with trio.move_on_after(self.close_timeout):
                with suppress(trio_websocket.ConnectionClosed):
                    await link.ws.aclose()
        self._finish(ConnectionClosed(f"the client closed its connection to {self._target}",
                                      close_code=CloseCode.NORMAL))

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
                logger.warning("not reconnecting to %s: %s", self._target, verdict)
                self._finish(_closed_because(error, verdict))
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
        if code in _FINAL_CLOSE_CODES:
            return f"the server closed the connection with code {code}"
        if code in _CLIENT_BUG_CLOSE_CODES:
            logger.warning(
                "the server closed the connection with code %s (%s): this client likely has "
                "a bug, and reconnecting will likely repeat it", code, error.reason)
        return None

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
                if self._started:
                    await self._rejoin(link)
                if link.error is None:
                    self._link = link
                    self._changed.unpark_all()
                if not self._started:
                    self._started = True
                    task_status.started()
                else:
                    self._reconnects += 1
                    logger.info("reconnected to %s", self._target)
                    await call_hook(self._on_reconnect)

    async def _rejoin(self, link: Link) -> None:
        """Join the client's rooms again on a new connection (v1 servers cannot
        resume sessions, so RESUME is not tried)."""
        for room in sorted(self.rooms):
            try:
                result = await self._request_on(link, partial(Join, room), None, f"join {room!r}")
                if room not in self.rooms:  # left while the join was on its way
                    await self._request_on(link, partial(Leave, room), None, f"leave {room!r}")
                    continue
            except ConnectionClosed:
                return
            except RequestError as exc:
                logger.warning("could not join %r again after reconnecting: %s", room, exc)
                self._explicit.discard(room)
                self._held.pop(room, None)
                self._positions.pop(room, None)
                await call_hook(self._on_error, exc)
                continue
            except EventBusError as exc:  # CallTimeout: keep the room for next time
                logger.warning("could not join %r again after reconnecting: %s", room, exc)
                continue
            position = _position(result)
            if position is not None:
                self._positions[room] = position

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
        if room in self.rooms:
            self._positions[room] = packet.position
        incoming = Incoming(room, packet.event, packet.data, packet.epoch, packet.seq)
        for subscription in self._subscriptions:
            if room in subscription.rooms:
                subscription._push(incoming)
        handler = self._handlers.get(packet.event)
        if handler is not None:
            await self._notify(handler, incoming)

    async def _on_event(self, link: Link, packet: Event) -> None:
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


def _position(value: Any) -> Position | None:
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


@asynccontextmanager
async def open_client(client: Client) -> AsyncIterator[Client]:
    """Run ``client`` for the length of the block: connect (raising if the first
    connection fails), yield it, then close it."""
    with collapse_groups():
        async with trio.open_nursery() as nursery:
            await nursery.start(client._run)
            try:
                yield client
            finally:
                with trio.CancelScope(shield=True):
                    await client.aclose()
                nursery.cancel_scope.cancel()


def connect(
    url: str, *, codec: str = "json", headers: Headers | None = None,
    subprotocols: Sequence[str] | None = None, reconnect: bool | Backoff = True,
    ssl_context: ssl.SSLContext | None = None, request_timeout: float = 10.0,
    connect_timeout: float = 10.0, wait_reconnect: float = 10.0, close_timeout: float = 2.0,
    max_message_size: int = MAX_MESSAGE_SIZE,
) -> AbstractAsyncContextManager[Client]:
    """Connect to an eventbus server: ``async with connect(url) as client: ...``.

    Args:
        url: ``ws://host:port/path`` or ``wss://...``.
        codec: ``"json"`` or ``"msgpack"`` (binary data needs msgpack).
        headers: Extra handshake headers, e.g. ``{"Authorization": "Bearer ..."}``.
        subprotocols: Offer these subprotocols instead of the codec's one; the
            server's choice then decides the codec.
        reconnect: ``True`` (the default :class:`Backoff`), a :class:`Backoff`, or
            ``False``. The first connection is never retried: if it fails,
            ``connect`` raises.
        ssl_context: For ``wss://`` URLs.
        request_timeout: Default timeout of :meth:`Client.call`, ``join``,
            ``leave`` and ``publish``.
        connect_timeout: Seconds for TCP, TLS, handshake and WELCOME together.
        wait_reconnect: Seconds an operation waits for a reconnection.
        close_timeout: Seconds to wait for the closing handshake.
        max_message_size: Largest message accepted from the server.

    Raises:
        HandshakeRejected: the server answered the handshake with an HTTP status.
        ConnectionClosed: the server could not be reached or closed at once.
        ValueError: a bad URL or codec.

    .. versionadded:: 0.1.0
    """
    offered = list(subprotocols) if subprotocols is not None else subprotocols_for(codec)
    opener = url_opener(
        url, subprotocols=offered, headers=encode_headers(headers), ssl_context=ssl_context,
        connect_timeout=connect_timeout, close_timeout=close_timeout,
        max_message_size=max_message_size,
    )
    client = Client(
        opener, target=url, reconnect=reconnect, request_timeout=request_timeout,
        connect_timeout=connect_timeout, wait_reconnect=wait_reconnect,
        close_timeout=close_timeout,
    )
    return open_client(client)
