"""The trio client's API: :func:`connect` and :class:`Client`.

A :class:`Client` emits and calls events, joins, leaves and publishes to rooms,
subscribes to rooms, and runs ``on`` handlers; the connection machinery under it
(reconnection, the reader, the heartbeat watchdog) is :class:`~.session.Session`.
"""

from __future__ import annotations

import logging
import math
import ssl
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from functools import partial
from typing import Any, TypeVar

import trio
import trio_websocket

from ..codes import CloseCode
from ..errors import ConnectionClosed, EventBusError, RemoteProtocolError
from ..protocol import (
    JSON_SUBPROTOCOL,
    MSGPACK_SUBPROTOCOL,
    NAME_MAX_BYTES,
    Emit,
    Join,
    Leave,
    Packet,
    Position,
    WelcomeOptions,
    check_name,
)
from .backoff import Backoff
from .handlers import Handler
from .session import Session, position_from
from .subscription import Subscription
from .transport import (
    CANCELLED_CLOSE_WAIT,
    MAX_MESSAGE_SIZE,
    Headers,
    Opener,
    collapse_groups,
    encode_headers,
    url_opener,
)

__all__ = ["Client", "connect", "open_client"]

logger = logging.getLogger("eventbus.client")

F = TypeVar("F", bound=Callable[..., Any])

_SUBPROTOCOLS = {"json": JSON_SUBPROTOCOL, "msgpack": MSGPACK_SUBPROTOCOL}


def subprotocols_for(codec: str) -> list[str]:
    """The subprotocol list a client with codec ``"json"`` or ``"msgpack"`` offers."""
    try:
        return [_SUBPROTOCOLS[codec]]
    except KeyError:
        raise ValueError(f"codec must be 'json' or 'msgpack', not {codec!r}") from None


class Client(Session):
    """A connection to an eventbus server that survives reconnections.

    Usually made and run by :func:`connect` (or :func:`eventbus.testing.connect`)
    for the length of an ``async with`` block. To connect through another
    transport, build one with an *opener* (a function returning an async context
    manager that yields an open ``trio_websocket.WebSocketConnection``; see
    :func:`eventbus.testing.memory_opener`) and run it with :func:`open_client`.

    Args:
        opener: Opens one WebSocket connection each time it is called.
        target: How to name the server in messages and logs (its URL).
        reconnect: As for :func:`connect`, and so are the other keyword arguments
            (``request_timeout``, ``connect_timeout``, ``wait_reconnect``,
            ``close_timeout``, ``offline_limit``).

    While the client is reconnecting, every operation that needs the connection
    (:meth:`emit`, :meth:`call`, :meth:`join`, :meth:`publish`) waits up to
    ``wait_reconnect`` seconds for it to come back, then raises
    :class:`~eventbus.ConnectionClosed`; what waits is sent, in the order it was
    made, once the session is resumed. At most ``offline_limit`` operations wait
    at once: beyond, an operation raises ``ConnectionClosed`` at once (and with
    ``wait_reconnect=0`` every one does: fail fast). Once the client has stopped for good
    (reconnection off; a close code after which it does not reconnect, listed
    under *Reconnecting* in the client reference; handshake refused with a 4xx;
    ``max_attempts`` reached; or the block exited) they raise it at once, and
    subscriptions end by raising it, with the server's ``close_code`` and
    ``reason``.

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
        wait_reconnect: float = 10.0, close_timeout: float = 2.0, offline_limit: int = 1000,
    ) -> None:
        super().__init__(
            opener, target=target, reconnect=reconnect, request_timeout=request_timeout,
            connect_timeout=connect_timeout, wait_reconnect=wait_reconnect,
            close_timeout=close_timeout, offline_limit=offline_limit,
        )

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
    def positions(self) -> Mapping[str, Position]:
        """The last position seen per room, which a RESUME resumes from: from JOIN
        acks, room events and RESUME verdicts, in the order they arrived. Within an
        epoch a room's position only moves forward; a new epoch replaces it. The
        acks of the client's own publishes do not count: with several servers such
        an ack may arrive before an earlier message of the room does."""
        return dict(self._positions)

    def statistics(self) -> dict[str, int]:
        """Counters: ``reconnects``, ``missed`` (dropped by the server, from GAP),
        ``duplicates`` (room events seen already, dropped), ``dropped`` (by full
        subscription buffers), ``pending`` requests."""
        link = self._current
        return {
            "reconnects": self._reconnects,
            "missed": self.state.missed,
            "duplicates": self.state.duplicates,
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

    def on_resume(self, func: F) -> F:
        """Register ``hook(recoveries)``, run after each reconnection with a
        :class:`~eventbus.Recovery` per room the client was in, by room: whether
        the server replayed everything the client missed there, or why not (the
        app refetches the state of those). Runs before :meth:`on_reconnect`."""
        self._on_resume = func
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
                if room not in self.rooms:
                    # ROOM_EVENTs read while the join was unanswered recorded one.
                    self._positions.pop(room, None)
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

        A publish whose connection is lost before its answer is sent again after
        the reconnection (again after each one, until answered), with the same
        publish id, so that the server applies it once (PROTOCOL.md section 6.6). It
        raises ``ConnectionClosed`` instead of risking a second copy when the server
        could not resume the session, or when the RESUME said the room was not
        recovered (a publish id holds only while its first message is in the room's
        history). A room the client is not in gets no verdict, so a publish to one is
        sent again regardless: if such a room keeps no history, or its history moved
        on, it may then apply twice. While disconnected, waits for the
        connection as :meth:`call` does.

        Returns:
            The position the message got, or ``None`` if the room had no members
            and keeps no history.

        Raises:
            Forbidden: the server does not let this client publish there.
            CallTimeout, ConnectionClosed, LocalProtocolError: as for :meth:`call`.
        """
        return await self._publish(room, event, data, timeout)

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
            # Being cancelled, the reader that would read the acks may be cancelled
            # too: then send the leaves without asking for answers.
            answered = trio.current_effective_deadline() != -math.inf
            with trio.CancelScope(shield=True), trio.move_on_after(self.close_timeout):
                await self._release(held, answered=answered)

    async def _release(self, rooms: list[str], *, answered: bool = True) -> None:
        for room in rooms:
            self._held[room] -= 1
            if self._held[room] <= 0:
                del self._held[room]
                if room not in self._explicit:
                    self._positions.pop(room, None)
                    link = self._link
                    if link is not None and not self._in_reader(link):
                        try:
                            if answered:
                                await self._request_on(link, partial(Leave, room), None,
                                                       f"leave {room!r}")
                            else:
                                await link.send(link.encode(Leave(room)))
                        except ConnectionClosed:
                            pass  # the server takes a closed connection out of its rooms
                        except EventBusError as exc:
                            logger.warning("could not leave %r: %s", room, exc)

    async def _join_now(self, room: str, timeout: float | None) -> Position:
        result = await self._request(partial(Join, room), timeout, f"join {room!r}",
                                     position_of=room)
        position = position_from(result)
        if position is None:
            raise RemoteProtocolError(f"the server answered a join with {result!r}, "
                                      "not a position")
        return position

    async def _request(
        self, make: Callable[[int], Packet], timeout: float | None, what: str,
        *, position_of: str | None = None,
    ) -> Any:
        link = await self._wait_link()
        return await self._request_on(link, make, timeout, what, position_of=position_of)

    # --- closing ------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the connection (code 1000) and stop reconnecting; idempotent."""
        await self._close(self.close_timeout)

    async def _close(self, wait: float) -> None:
        """:meth:`aclose`, waiting up to ``wait`` seconds for the server's close reply."""
        if self._closing:
            return
        self._closing = True
        link = self._current
        if link is not None and link.error is None:
            with trio.move_on_after(wait):
                with suppress(trio_websocket.ConnectionClosed):
                    await link.ws.aclose()
        self._finish(ConnectionClosed(f"the client closed its connection to {self._target}",
                                      close_code=CloseCode.NORMAL))


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
                # Cancelled from outside, the reader that would read the server's close
                # reply is cancelled too: send the close frame, do not wait for a reply.
                cancelled = trio.current_effective_deadline() == -math.inf
                with trio.CancelScope(shield=True):
                    await client._close(CANCELLED_CLOSE_WAIT if cancelled
                                        else client.close_timeout)
                nursery.cancel_scope.cancel()


def connect(
    url: str, *, codec: str = "json", headers: Headers | None = None,
    subprotocols: Sequence[str] | None = None, reconnect: bool | Backoff = True,
    ssl_context: ssl.SSLContext | None = None, request_timeout: float = 10.0,
    connect_timeout: float = 10.0, wait_reconnect: float = 10.0, close_timeout: float = 2.0,
    max_message_size: int = MAX_MESSAGE_SIZE, offline_limit: int = 1000,
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
        wait_reconnect: Seconds an operation waits for a reconnection (0: none
            waits, each fails at once while disconnected).
        close_timeout: Seconds to wait for the closing handshake.
        max_message_size: Largest message accepted from the server.
        offline_limit: Operations that may wait for a reconnection at once; beyond,
            they raise ``ConnectionClosed`` at once.

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
        close_timeout=close_timeout, offline_limit=offline_limit,
    )
    return open_client(client)
