"""The application object: handlers, hooks, rooms, delivery, and serving.

Structure: :meth:`EventBus.serve` owns one nursery for the connections and one
for the listeners, plus the heartbeat task. Each connection runs in its own task
(see :mod:`.connection`). Delivery to a room encodes the message once per codec
and hands the same frame to every member's non-blocking send path.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import trio

from ..adapters import Adapter, AdapterState, Envelope, Member, MemoryAdapter, Published
from ..codes import CloseCode
from ..errors import HandshakeRejected
from ..protocol import (
    JsonCodec,
    MsgpackCodec,
    Position,
    Role,
    WelcomeOptions,
    check_name,
)
from .config import ServerConfig
from .connection import Connection, Disconnect
from .dispatch import Dispatcher
from .handlers import Handler, make_handler, maybe_await
from .handshake import Handshakes, descriptor_capacity
from .history import HistoryPolicy
from .http import HandshakeRequest, plain_answer, read_request, send_response
from .logs import LogBudget, may_log, quote
from .metrics import CONTENT_TYPE, Metrics, exposition, registry_for
from .outbox import Delivery
from .recovery import Recovery
from .router import CallResults, Router

__all__ = ["CallResults", "EventBus"]

logger = logging.getLogger("eventbus.server")

F = TypeVar("F", bound=Callable[..., Any])
# An unmasked ping with an empty payload: the same two bytes for everyone.
_PING_FRAME = b"\x89\x00"
# accept() failures that mean "no capacity now" (trio.serve_listeners' list), and
# how long to wait before trying again.
_ACCEPT_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
_ACCEPT_RETRY = 0.1
# How often the bus looks at its adapter's state, for /health.
_ADAPTER_WATCH = 0.5
# Pauses of the accept loop closer together than this make one episode, logged once.
_EPISODE_GAP = 10.0
# Log lines that all clients together may cause: a burst, then a line a second.
_CLIENT_LOG_BURST = 100.0
_CLIENT_LOG_PER_SECOND = 1.0
# Lines about connections opening and closing: one each, up to this rate.
_CONNECTION_LOG_BURST = 1000.0
_CONNECTION_LOG_PER_SECOND = 100.0

AuthHook = Callable[[HandshakeRequest], Any]
RoomHook = Callable[[Connection, str], Any]
PublishHook = Callable[[Connection, str, str], Any]


class EventBus:
    """An event bus: register handlers and hooks, then :meth:`serve`.

    Args:
        config: A complete :class:`ServerConfig`; or give its fields as keyword
            arguments instead (``EventBus(open_rooms=True, ping_interval=10)``).
        adapter: How this bus reaches its other nodes; by default a
            :class:`~eventbus.adapters.MemoryAdapter` of its own (one node, no
            external service).
    """

    def __init__(
        self, config: ServerConfig | None = None, *, adapter: Adapter | None = None,
        **settings: Any,
    ) -> None:
        if config is not None and settings:
            raise TypeError("give either a ServerConfig or keyword settings, not both")
        self.config = config if config is not None else ServerConfig(**settings)
        self.welcome_options: WelcomeOptions = self.config.welcome_options()
        limits = {"max_name": self.config.max_name, "max_elements": self.config.max_elements}
        self._json = JsonCodec(Role.SERVER, **limits)
        self._msgpack = MsgpackCodec(Role.SERVER, **limits)
        self._handlers: dict[str, Handler] = {}
        self._catch_all: Handler | None = None
        self._on_connect: Callable[[Connection], Any] | None = None
        self._on_disconnect: Callable[[Connection, Disconnect], Any] | None = None
        self._authenticate: AuthHook | None = None
        self._authorize_join: RoomHook | None = None
        self._authorize_publish: PublishHook | None = None
        self._connections: dict[str, Connection] = {}
        self._handshakes = Handshakes(self)
        #: The listeners of the operations port (``metrics_port``), once serving.
        self.ops_listeners: list[trio.abc.Listener[Any]] = []
        self._adapter_down_since: float | None = None
        self._dispatcher = Dispatcher(self)
        #: What the bus counts (see :mod:`eventbus.server.metrics`); ``None`` when the
        #: ``metrics`` setting is off.
        self.metrics: Metrics | None = Metrics() if self.config.metrics else None
        # Log lines clients may cause, all connections together (each has its own too).
        # (A bus is often made outside trio, so the bucket starts full at time 0.)
        self._client_log_budget = LogBudget(_CLIENT_LOG_BURST, _CLIENT_LOG_PER_SECOND, 0.0)
        self._connection_log_budget = LogBudget(
            _CONNECTION_LOG_BURST, _CONNECTION_LOG_PER_SECOND, 0.0,
            "lines about connections opening and closing")
        self.adapter: Adapter = adapter if adapter is not None else MemoryAdapter()
        self._router = Router(self.adapter, self._connections, self._json, self._msgpack)
        self._router.metrics = self.metrics
        self._router.history = _history_policy(self.config)
        self._recovery = Recovery(self)
        self.metrics_registry = registry_for(self)
        self.adapter.attach(self._router)
        self._draining = False
        self._stop: trio.Event | None = None
        self._conn_nursery: trio.Nursery | None = None

    # --- registration ---------------------------------------------------------------

    def on(self, event: str, *, concurrency: int = 1) -> Callable[[F], F]:
        """Register ``async def handler(sock, data)`` for an event.

        The handler's return value answers the client's request when it asked for
        one. Raise a :class:`~eventbus.RequestError` to answer with its code.

        A plain ``def handler(sock, data)`` works too. Handlers run in the
        connection's worker task, apart from its reader, so that one may wait even
        for an answer from the same client (``await sock.call(...)``).

        Args:
            event: The event name.
            concurrency: Runs of this (async) handler one connection may have at
                once; with the default 1, a connection's events are handled in order.
        """
        check_name(event, "event", self.config.max_name, reserved_ok=False)

        def register(func: F) -> F:
            self._handlers[event] = make_handler(func, concurrency)
            return func

        return register

    def on_unknown(self, func: F) -> F:
        """Register ``async def handler(sock, event, data)`` (or a plain ``def``) for
        events with no handler (without one, they are answered ``unknown_event``)."""
        self._catch_all = make_handler(func)
        return func

    def on_connect(self, func: F) -> F:
        """Register ``async def hook(sock)`` (or a plain ``def``), run when a
        connection opens (after its welcome, before its first request is handled)."""
        self._on_connect = func
        return func

    def on_disconnect(self, func: F) -> F:
        """Register ``async def hook(sock, disconnect)`` (or a plain ``def``), run
        when a connection ends; ``disconnect`` is a :class:`Disconnect` with the
        close code and reason.

        By then the connection is closed (its socket too, so a slow hook holds no
        socket open), receives nothing more and is in no room, but ``sock.rooms``
        still lists the rooms it was in (to tell their members). The hook runs in
        the connection's task: a graceful shutdown does not wait for it.
        """
        self._on_disconnect = func
        return func

    def authenticate(self, func: F) -> F:
        """Register ``async def hook(request) -> state`` (or a plain ``def``), run on
        every handshake.

        It sees a :class:`HandshakeRequest` and returns the connection's state
        (``sock.state``), or raises :class:`~eventbus.HandshakeRejected` (for
        example with status 401) to refuse the connection before the upgrade.
        """
        self._authenticate = func
        return func

    def authorize_join(self, func: F) -> F:
        """Register ``hook(sock, room) -> bool`` (sync or async): may the client join?"""
        self._authorize_join = func
        return func

    def authorize_publish(self, func: F) -> F:
        """Register ``hook(sock, room, event) -> bool`` (sync or async): may the
        client publish this event to the room?"""
        self._authorize_publish = func
        return func

    # --- the app's view -----------------------------------------------------------------

    @property
    def connections(self) -> Mapping[str, Connection]:
        """The open connections of this node, by session id."""
        return self._connections

    def reconfigure(self, config: ServerConfig) -> None:
        """Replace the bus's settings before it runs (what ``eventbus serve`` does
        with the settings given by flags, environment and config file).

        Raises:
            RuntimeError: the bus is running, or has connections.
        """
        if self._stop is not None or self._connections:
            raise RuntimeError("reconfigure() must be called before the bus runs")
        self.config = config
        self.metrics = self._router.metrics = Metrics() if config.metrics else None
        self.welcome_options = config.welcome_options()
        limits = {"max_name": config.max_name, "max_elements": config.max_elements}
        self._json = JsonCodec(Role.SERVER, **limits)
        self._msgpack = MsgpackCodec(Role.SERVER, **limits)
        self._router._json = self._json
        self._router._msgpack = self._msgpack
        self._router.history = _history_policy(config)
        self._recovery.reconfigure()

    def use_adapter(self, adapter: Adapter) -> None:
        """Reach the other nodes through ``adapter`` from now on (what
        ``eventbus serve --redis`` does with an app's bus). Only before the bus runs.

        Raises:
            RuntimeError: the bus is running, or has connections or rooms.
        """
        if self._stop is not None or self._connections or len(self._router.rooms):
            raise RuntimeError("use_adapter() must be called before the bus runs")
        self.adapter = adapter
        self._router.adapter = adapter
        adapter.attach(self._router)

    @property
    def node_id(self) -> str:
        """This node's id among the nodes of the bus (every sid starts with it)."""
        return self._router.node_id

    def members(self, room: str) -> list[Connection]:
        """The connections of this node in a room, in the order they joined."""
        found = self._router.rooms.get(room)
        return list(found.members) if found is not None else []

    async def all_members(self, room: str) -> list[Member]:
        """Every connection in a room, on every node (with the Redis adapter,
        members of a node that died disappear within its liveness bound)."""
        return await self.adapter.members(room)

    def position(self, room: str) -> Position | None:
        """The last position of a room this node has seen, or ``None`` if it has no
        members here (ask the adapter for the authoritative one)."""
        found = self._router.rooms.get(room)
        return found.position if found is not None else None

    def health(self) -> tuple[int, dict[str, Any]]:
        """What ``GET /health`` answers: 200 while the bus serves and its adapter is
        connected (or has been disconnected for less than ``health_grace``), 503
        while it drains or once its adapter has been disconnected longer, with a
        small JSON body saying why. (``GET /live`` answers 200 regardless, for an
        orchestrator that must not restart a node because Redis blipped.)"""
        info: dict[str, Any] = {
            "status": "ok", "connections": len(self._connections),
            "adapter": self.adapter.state.value,
        }
        if self.draining:
            info["status"] = "draining"
            return 503, info
        if self._adapter_down_since is not None:
            down = trio.current_time() - self._adapter_down_since
            info["adapter_down_seconds"] = round(down, 1)
            if down >= self.config.health_grace:
                info["status"] = "adapter_down"
                return 503, info
        return 200, info

    async def _watch_adapter(self) -> None:
        # How long the adapter has been disconnected, for /health; polled, since
        # adapters do not announce their state.
        while True:
            if self.adapter.state is AdapterState.DISCONNECTED:
                if self._adapter_down_since is None:
                    self._adapter_down_since = trio.current_time()
            else:
                self._adapter_down_since = None
            await trio.sleep(_ADAPTER_WATCH)

    @property
    def draining(self) -> bool:
        """Whether a graceful shutdown has begun."""
        return self._draining or (self._stop is not None and self._stop.is_set())

    def statistics(self) -> dict[str, int | str]:
        """Counters for monitoring: this node's, and its adapter's under
        ``adapter.`` (its state, and with Redis its reconnects and what outages
        lost: see :mod:`eventbus.adapters.redis`)."""
        stats: dict[str, int | str] = {
            "connections": len(self._connections),
            "rooms": len(self._router.rooms),
            "running_handlers": self._dispatcher.running,
        }
        for name, value in self.adapter.statistics().items():
            stats[f"adapter.{name}"] = value
        return stats

    # --- delivery -----------------------------------------------------------------------

    def emit(
        self, event: str, data: Any = None, *, to: str | Connection | None = None,
        to_room: str | None = None, to_sid: str | None = None,
        skip: Connection | None = None, delivery: Delivery | str = Delivery.RELIABLE,
        key: str | None = None,
    ) -> int:
        """Send an event without waiting for anyone.

        Name at most one target; with none, the event goes to every connection.

        Args:
            event: The event name.
            data: The payload (binary data reaches msgpack clients only; JSON
                members of a room get an ``unencodable`` error and a gap instead).
            to: A room name (the same as ``to_room``), or a connection.
            to_room: A room name. A string is always a room, never a session id,
                so a client-chosen room name cannot address one connection.
            to_sid: The session id of one connection, on this node or another (0 is
                returned when it is known at once that there is no such connection).
            skip: A connection that must not receive it (broadcast-except-sender).
            delivery: ``reliable`` (default), ``volatile`` or ``latest``; see
                :class:`Delivery`.
            key: For ``latest``: messages with the same key supersede each other.

        Returns:
            How many connections the event was handed to.

        Raises:
            LocalProtocolError: the data cannot be encoded.
            TypeError: more than one target was named.
        """
        policy = self._checked_event(event, delivery, key)
        target = self._target(to, to_room, to_sid)
        if isinstance(target, Connection):
            if target is skip or not target.open:
                return 0
            target.emit(event, data, delivery=policy, key=key)
            return 1
        if target is None:
            if to_sid is not None:
                if skip is not None and skip.sid == to_sid:
                    return 0
                return int(self._router.emit_to_sid(to_sid, event, data, policy, key))
            return self._router.emit_all(event, data, skip, policy, key)
        return self._router.publish_nowait(self._envelope(target, event, data, skip, policy, key))

    async def publish(
        self, room: str, event: str, data: Any = None, *, skip: Connection | None = None,
        delivery: Delivery | str = Delivery.RELIABLE, key: str | None = None,
    ) -> Published:
        """Send an event to a room on every node, and wait until it is numbered.

        Returns:
            The position the message took in the room, and how many nodes had
            members to hand it to.

        Raises:
            LocalProtocolError: the data cannot be encoded.
            Unavailable: the adapter cannot publish now (for example Redis is down).
        """
        policy = self._checked_event(event, delivery, key)
        return await self._router.publish(self._envelope(room, event, data, skip, policy, key))

    def _checked_event(self, event: str, delivery: Delivery | str, key: str | None) -> Delivery:
        """Check what every send checks first; the delivery policy."""
        check_name(event, "event", self.config.max_name, reserved_ok=True)
        policy = Delivery(delivery)
        if policy is Delivery.LATEST and key is None:
            raise ValueError("latest delivery needs a key")
        return policy

    def _envelope(
        self, room: str, event: str, data: Any, skip: Connection | None, delivery: Delivery,
        key: str | None,
    ) -> Envelope:
        check_name(room, "room", self.config.max_name, reserved_ok=True)
        return self._router.envelope(room, event, data, skip, delivery, key)

    def _target(
        self, to: str | Connection | None, to_room: str | None, to_sid: str | None,
    ) -> str | Connection | None:
        """The one target named: a room name, a connection, or None (a sid, in
        ``to_sid``, or everyone)."""
        named = [target for target in (to, to_room, to_sid) if target is not None]
        if len(named) > 1:
            raise TypeError("name one target: to, to_room or to_sid")
        if to_sid is not None:
            return self._connections.get(to_sid)
        if isinstance(to, Connection) or to is None:
            return to if to is not None else to_room
        if not isinstance(to, str):
            raise TypeError(f"to must be a room name or a Connection, not {type(to).__name__}")
        return to

    def _emit_room(
        self, event: str, data: Any, room: str, skip: Connection | None, delivery: Delivery,
        key: str | None,
    ) -> int:
        policy = self._checked_event(event, delivery, key)
        return self._router.publish_nowait(self._envelope(room, event, data, skip, policy, key))

    async def call(
        self, event: str, data: Any = None, *, to: str | Connection | None = None,
        to_room: str | None = None, to_sid: str | None = None,
        timeout: float | None = None,
    ) -> CallResults:
        """Ask every member of a room (or one connection) for an answer and collect
        the answers.

        Args:
            event: The event name.
            data: The payload; each recipient gets its own request (with its own
                ack id), so this sends one message per member.
            to: A room name (the same as ``to_room``), or a connection.
            to_room: A room name (a string is never taken for a session id).
            to_sid: The session id of one connection of this node; an unknown one
                is in ``errors`` as :class:`~eventbus.ConnectionClosed`.
            timeout: Seconds to wait for each answer (default: the bus's
                ``call_timeout``); all recipients are asked at once.

        Returns:
            :class:`CallResults`: the answers, the errors (including connections
            that closed) and the members that did not answer in time. It never
            raises for one member's failure.

        Raises:
            TypeError: no target, or more than one, was named.
        """
        check_name(event, "event", self.config.max_name, reserved_ok=True)
        if to_sid is None and to is None and to_room is None:
            raise TypeError("name a target: to, to_room or to_sid")
        target = self._target(to, to_room, to_sid)
        limit = self.config.call_timeout if timeout is None else timeout
        if isinstance(target, Connection):
            return await self._router.call(event, data, room=None, conn=target, sid=None,
                                           timeout=limit)
        if isinstance(target, str):
            return await self._router.call(event, data, room=target, conn=None, sid=None,
                                           timeout=limit)
        return await self._router.call(event, data, room=None, conn=None, sid=to_sid,
                                       timeout=limit)

    # --- connection lifecycle ---------------------------------------------------------

    def _connected(self, conn: Connection) -> None:
        self._connections[conn.sid] = conn
        if self.metrics is not None:
            self.metrics.opened += 1
        if self._draining:
            # Opened while the shutdown was taking its list of connections.
            conn.close(CloseCode.GOING_AWAY, "server shutting down")

    async def _run_on_connect(self, conn: Connection) -> None:
        assert self._on_connect is not None
        try:
            await maybe_await(self._on_connect(conn))
        except Exception:
            logger.exception("on_connect hook failed for %s", conn.sid)
            conn.close(CloseCode.INTERNAL_ERROR, "internal error")

    def _detach(self, conn: Connection) -> None:
        # Out of every room at once, but sock.rooms still lists them for the hook.
        self._router.detach(conn)
        self._connections.pop(conn.sid, None)
        if self.metrics is not None:
            self.metrics.connection_ended(conn)
        disconnect = conn.disconnect
        assert disconnect is not None
        if self._may_log_connection():
            logger.info("connection %s closed by the %s: %d %s", conn.sid,
                        "server" if disconnect.by_server else "client", disconnect.code,
                        quote(disconnect.reason))

    async def _run_on_disconnect(self, conn: Connection) -> None:
        if self._on_disconnect is None:
            return
        assert conn.disconnect is not None
        try:
            await maybe_await(self._on_disconnect(conn, conn.disconnect))
        except Exception:
            logger.exception("on_disconnect hook failed for %s", conn.sid)

    async def handle_stream(self, stream: trio.abc.Stream) -> None:
        """Serve one client over any trio stream, from the HTTP request to the close.

        :meth:`serve` calls this for each accepted connection; tests may call it
        with one end of an in-memory stream pair.
        """
        try:
            conn = await self._handshakes.admit(stream)
            if conn is not None:
                await conn.run()
        except Exception:
            logger.exception("connection failed")
            await trio.aclose_forcefully(stream)
        except BaseException:
            # Cancelled (the bus stopped) in the middle of a handshake: close the
            # socket now, or the client waits for an answer until its own timeout.
            await trio.aclose_forcefully(stream)
            raise

    @property
    def max_connections(self) -> int:
        """The open connections (handshakes included) above which new ones are
        answered 503: ``max_connections`` if set, else what the process's file
        descriptor limit allows with room to spare."""
        if self.config.max_connections is not None:
            return self.config.max_connections
        return descriptor_capacity()

    def _may_log_connection(self) -> bool:
        """Whether a connection may be logged as opened or closed now: one line each,
        at a rate far above an ordinary server's, but not a connection flood's."""
        return may_log(trio.current_time(), self._connection_log_budget)

    def _may_log(self) -> bool:
        """Whether a line about a client may be logged now: clients that connect
        only to be refused or closed, over and over, must not flood the log."""
        return may_log(trio.current_time(), self._client_log_budget)

    # --- serving --------------------------------------------------------------------

    async def serve(
        self, host: str = "127.0.0.1", port: int = 8765, *,
        ssl_context: ssl.SSLContext | None = None, reuse_port: bool = False,
        task_status: trio.TaskStatus[list[trio.abc.Listener[Any]]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on ``host:port`` (``port=0`` picks a free one) until :meth:`shutdown`.

        With ``ssl_context`` the server speaks ``wss://`` (its frames then go
        through TLS without the direct-write fast path). With ``reuse_port``,
        several processes may listen on the same port (``SO_REUSEPORT``: the
        kernel spreads new connections among them), which is how
        ``eventbus serve --workers`` runs one bus on every core. Use with
        ``await nursery.start(bus.serve, ...)``, which returns the listeners:
        ``listeners[0].socket.getsockname()`` gives the port, or under TLS
        ``listeners[0].transport_listener.socket.getsockname()``.
        """
        listeners: list[trio.abc.Listener[Any]] = (
            await _reuse_port_listeners(host, port) if reuse_port
            else list(await trio.open_tcp_listeners(port, host=host)))
        if ssl_context is not None:
            listeners = [
                trio.SSLListener(listener, ssl_context, https_compatible=False)
                for listener in listeners
            ]
        ops: list[trio.abc.Listener[Any]] = []
        if self.config.metrics_port is not None:
            ops = list(await trio.open_tcp_listeners(self.config.metrics_port, host=host))
        await self.serve_listeners(listeners, ops_listeners=ops, task_status=task_status)

    async def serve_listeners(
        self, listeners: list[trio.abc.Listener[Any]], *,
        ops_listeners: Sequence[trio.abc.Listener[Any]] = (),
        task_status: trio.TaskStatus[list[trio.abc.Listener[Any]]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve on listeners you opened; see :meth:`serve`. ``ops_listeners``
        answer only ``/metrics``, ``/health`` and ``/live`` (see ``metrics_port``)."""
        self.ops_listeners = list(ops_listeners)
        try:
            async with trio.open_nursery() as ops:
                # The operations port answers during the drain too (/health: 503).
                for listener in ops_listeners:
                    ops.start_soon(self._accept, listener, ops, self._answer_ops)
                async with self.running() as connections, trio.open_nursery() as accepting:
                    for listener in listeners:
                        accepting.start_soon(self._accept, listener, connections,
                                             self.handle_stream)
                    task_status.started(listeners)
                    await self.wait_shutdown()
                    accepting.cancel_scope.cancel()
                ops.cancel_scope.cancel()
        finally:
            # Stopped before they were served (cancelled while the adapter started,
            # say): a listener nobody accepts on must still be closed.
            with trio.CancelScope(shield=True):
                for listener in (*listeners, *ops_listeners):
                    await trio.aclose_forcefully(listener)

    async def _answer_ops(self, stream: trio.abc.Stream) -> None:
        """Answer a request on the operations port: /metrics, /health or /live."""
        with contextlib.suppress(HandshakeRejected, trio.BrokenResourceError,
                                 trio.ClosedResourceError, OSError), \
                trio.move_on_after(self.config.handshake_timeout):
            exchange = await read_request(stream)
            if exchange is not None:
                method = exchange.request.method.decode("ascii", "replace")
                path = exchange.handshake_request(None).path
                answer: tuple[int, bytes, str, list[tuple[str, str]]]
                if path == "/metrics" and method in ("GET", "HEAD"):
                    answer = (200, exposition(self.metrics_registry), CONTENT_TYPE, [])
                elif path in ("/metrics", "/health", "/live"):
                    answer = plain_answer(method, path, self.health())
                else:
                    answer = (404, b"this port answers /metrics, /health and /live\n",
                              "text/plain; charset=utf-8", [])
                status, body, kind, extra = answer
                await send_response(stream, exchange, status, body, kind, extra)
        await trio.aclose_forcefully(stream)

    async def _accept(
        self, listener: trio.abc.Listener[Any], connections: trio.Nursery,
        handler: Callable[[trio.abc.Stream], Awaitable[None]],
    ) -> None:
        """Accept connections until cancelled; each is served in ``connections``.

        Out of descriptors (or memory), accepting pauses and retries, as
        ``trio.serve_listeners`` does, but says so once per episode instead of a
        traceback per retry.
        """
        async with listener:  # closed when serving ends, as trio.serve_listeners does
            await self._accept_until_cancelled(listener, connections, handler)

    async def _accept_until_cancelled(
        self, listener: trio.abc.Listener[Any], connections: trio.Nursery,
        handler: Callable[[trio.abc.Stream], Awaitable[None]],
    ) -> None:
        # An episode of exhaustion is said once, and its end once, with how many
        # pauses it took; pauses within _EPISODE_GAP of each other are one episode.
        pauses = 0
        last_pause = -math.inf
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in _ACCEPT_CAPACITY_ERRNOS:
                    raise
                now = trio.current_time()
                if pauses == 0 and now - last_pause > _EPISODE_GAP:
                    # No traceback: the cause is the process's limits, not the code.
                    logger.error(  # noqa: TRY400
                        "cannot accept connections: %s (%d open); retrying every %.1f s"
                        " (lower max_connections, or raise the descriptor limit)",
                        os.strerror(exc.errno or 0), self._handshakes.open_count(), _ACCEPT_RETRY)
                pauses += 1
                last_pause = now
                await trio.sleep(_ACCEPT_RETRY)
                continue
            if pauses and trio.current_time() - last_pause > _EPISODE_GAP:
                logger.warning("accepting connections again (%d open) after %d pauses",
                               self._handshakes.open_count(), pauses)
                pauses = 0
            handshakes = self._handshakes
            if handshakes.busy_logged and handshakes.open_count() < 0.9 * self.max_connections:
                handshakes.busy_logged = False  # the episode is over: say so next time
            connections.start_soon(handler, stream)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[trio.Nursery]:
        """Run the bus's own work (heartbeats, graceful shutdown) without listening.

        :meth:`serve` uses it; use it yourself to serve streams with
        :meth:`handle_stream` (as :mod:`eventbus.testing` does) with heartbeats
        running. It yields a nursery that may own the connections' tasks. When the
        block ends normally, the bus drains and closes its connections as in
        :meth:`shutdown`; when it is cancelled, everything stops at once.
        """
        self._stop = trio.Event()
        self._draining = False
        async with trio.open_nursery() as nursery:
            await nursery.start(self.adapter.run, self._router)
            self._router.nursery = nursery
            nursery.start_soon(self._heartbeat)
            nursery.start_soon(self._watch_adapter)
            try:
                yield nursery
            except BaseException:
                # Cancelled or failed: a hard stop, no draining.
                nursery.cancel_scope.cancel()
                raise
            await self._drain()
            nursery.cancel_scope.cancel()

    async def wait_shutdown(self) -> None:
        """Wait until :meth:`shutdown` is called."""
        assert self._stop is not None, "the bus is not running"
        await self._stop.wait()

    def shutdown(self) -> None:
        """Begin a graceful shutdown: stop accepting, answer new requests with
        ``unavailable``, let running handlers finish (up to ``drain_timeout``),
        close every connection with 1001, then return from :meth:`serve`. The
        operations port (``metrics_port``), if any, answers ``/health`` with 503
        meanwhile, for load balancers."""
        if self._stop is not None:
            # From now on requests are answered `unavailable`, even before the
            # serving task wakes up to drain.
            self._draining = True
            self._stop.set()

    async def _drain(self) -> None:
        self._draining = True
        with trio.move_on_after(self.config.drain_timeout):
            # Polling, at shutdown only: a wakeup per finished handler would tax
            # the hot path for the sake of this one wait.
            while self._dispatcher.running:  # noqa: ASYNC110
                await trio.sleep(0.01)
        for conn in list(self._connections.values()):
            conn.close(CloseCode.GOING_AWAY, "server shutting down")
        with trio.move_on_after(self.config.close_timeout):
            while self._connections:  # noqa: ASYNC110
                await trio.sleep(0.01)

    async def _heartbeat(self) -> None:
        interval = self.config.ping_interval
        timeout = self.config.ping_timeout
        tick = min(interval, timeout) / 4
        while True:
            await trio.sleep(tick)
            now = trio.current_time()
            for conn in list(self._connections.values()):
                if conn.ping_deadline is not None:
                    if now >= conn.ping_deadline:
                        conn._abort(CloseCode.HEARTBEAT_TIMEOUT,
                                    f"no answer to a ping within {timeout} s")
                elif now >= conn.next_ping:
                    conn._send_control(_PING_FRAME)
                    conn.ping_deadline = now + timeout
                    conn.next_ping = now + interval
                if now >= conn.token_refresh and conn.open:
                    self._recovery.refresh(conn, now)


def _history_policy(config: ServerConfig) -> HistoryPolicy:
    return HistoryPolicy(config.history_size, config.history_age, config.history_bytes,
                         config.history_rooms)


async def _reuse_port_listeners(host: str, port: int) -> list[trio.abc.Listener[Any]]:
    """Listeners on ``host:port`` that other processes may share (Linux, BSD)."""
    if not hasattr(trio.socket, "SO_REUSEPORT"):  # pragma: no cover - not Linux or BSD
        raise OSError(errno.ENOPROTOOPT, "SO_REUSEPORT is not available on this system")
    listeners: list[trio.abc.Listener[Any]] = []
    for family, kind, proto, _, address in await trio.socket.getaddrinfo(
            host, port, type=trio.socket.SOCK_STREAM, flags=trio.socket.AI_PASSIVE):
        sock = trio.socket.socket(family, kind, proto)
        try:
            sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEADDR, 1)
            sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEPORT, 1)
            await sock.bind(address)
            sock.listen(4096)
        except OSError:
            sock.close()
            for listener in listeners:
                await listener.aclose()
            raise
        listeners.append(trio.SocketListener(sock))
    return listeners
