"""Who gets in: capacity, the HTTP handshake, the origin and authentication checks.

The path of a new connection, before it becomes a :class:`~.connection.Connection`:
at capacity, a newcomer must show its request at once, and may take the place of
a handshake that never sent one (silent sockets, as in a slowloris attack), or is
refused; then the request is read (``handshake_timeout``), answered with plain
HTTP if it is not an upgrade, checked (method, ``Origin``, subprotocol, the app's
``authenticate`` hook) and upgraded.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import trio
from wsproto.utilities import RemoteProtocolError as WSRemoteProtocolError

from ..errors import HandshakeRejected, UnsupportedSubprotocol
from ..protocol import MsgpackCodec, codec_for_subprotocol, select_subprotocol
from .connection import Connection
from .handlers import maybe_await
from .http import (
    HandshakeRequest,
    HttpExchange,
    accept_upgrade,
    plain_answer,
    read_request,
    send_response,
)
from .logs import quote
from .metrics import CONTENT_TYPE, exposition

if TYPE_CHECKING:
    from .app import EventBus

__all__ = ["Handshakes", "descriptor_capacity"]

logger = logging.getLogger("eventbus.server")

# At capacity, a handshake silent for this long gives its place to a new one; and a
# refusal waits at most this long to read the request and to send its 503.
_STALLED_HANDSHAKE = 0.5
_BUSY_READ = 0.05
# How long an address closed for abuse gets no burst on new connections, and how
# many such addresses are remembered (the oldest are forgotten first).
_PENALTY = 10.0
_PENALTIES_KEPT = 10_000


class Handshakes:
    """The handshakes of one bus: they count against ``max_connections``."""

    def __init__(self, bus: EventBus) -> None:
        self._bus = bus
        #: Handshakes in progress.
        self.count = 0
        # Handshakes still waiting for their request head, oldest first.
        self._unread: dict[trio.CancelScope, float] = {}
        # Addresses closed for abuse lately, with when that stops counting, oldest first.
        self._penalties: dict[str, float] = {}
        self.busy_logged = False

    async def admit(self, stream: trio.abc.Stream) -> Connection | None:
        """The connection ``stream`` opens, or ``None`` when it is refused, answered
        with plain HTTP, or gone."""
        exchange: HttpExchange | None = None
        if self.open_count() >= self._bus.max_connections:
            # At capacity, a newcomer must show its request at once; only then may
            # it take the place of a handshake that never sent one (else silent
            # sockets would only evict each other), and else it is refused.
            exchange = await self._read_briefly(stream)
            if exchange is None or not self._evict_stalled():
                await self._refuse_busy(stream, exchange)
                return None
        self.count += 1
        try:
            return await self._open(stream, exchange)
        finally:
            self.count -= 1

    async def _read_evictably(self, stream: trio.abc.Stream) -> HttpExchange | None:
        """Read the request; ``None`` if the peer left, or if the wait was cut short
        to make room for another connection (see :meth:`_evict_stalled`)."""
        with trio.CancelScope() as reading:
            self._unread[reading] = trio.current_time()
            try:
                return await read_request(stream)
            finally:
                self._unread.pop(reading, None)
        return None

    def penalize(self, remote: tuple[str, int] | None) -> None:
        """A connection from ``remote`` was closed for abuse: for ``_PENALTY``
        seconds, new connections from that address start with a token bucket of
        10 tokens, not ``burst``, so that reconnecting does not buy a fresh burst."""
        if remote is None:
            return
        self._penalties.pop(remote[0], None)
        self._penalties[remote[0]] = trio.current_time() + _PENALTY
        if len(self._penalties) > _PENALTIES_KEPT:
            del self._penalties[next(iter(self._penalties))]

    def penalized(self, remote: tuple[str, int] | None) -> bool:
        if remote is None or not self._penalties:
            return False
        until = self._penalties.get(remote[0])
        return until is not None and until > trio.current_time()

    def open_count(self) -> int:
        return len(self._bus._connections) + self.count

    def _evict_stalled(self) -> bool:
        """At capacity, make room by dropping the oldest handshake that has not sent
        its request within ``_STALLED_HANDSHAKE`` (a silent socket, as in a slowloris
        attack), so that silent sockets cannot keep new clients out for
        ``handshake_timeout``. Whether one was dropped."""
        now = trio.current_time()
        for scope, started in self._unread.items():
            if now - started >= _STALLED_HANDSHAKE:
                del self._unread[scope]
                scope.cancel()
                return True
            break  # the oldest is recent: so are the others
        return False

    async def _read_briefly(self, stream: trio.abc.Stream) -> HttpExchange | None:
        """The request, if it comes within ``_BUSY_READ``; else (or if it is not a
        valid one) ``None``."""
        with contextlib.suppress(HandshakeRejected, trio.BrokenResourceError,
                                 trio.ClosedResourceError, OSError):
            with trio.move_on_after(_BUSY_READ):
                return await read_request(stream)
        return None

    async def _refuse_busy(self, stream: trio.abc.Stream, exchange: HttpExchange | None) -> None:
        """Answer 503 to a request read at capacity, at once; close a connection that
        sent none (so that a refusal holds its descriptor for moments only)."""
        if self._bus.metrics is not None:
            self._bus.metrics.refused[503] += 1
        if not self.busy_logged:
            logger.warning("at max_connections (%d): new connections are answered 503",
                           self._bus.max_connections)
            self.busy_logged = True
        if exchange is not None:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError,
                                     OSError), trio.move_on_after(_BUSY_READ):
                await send_response(stream, exchange, 503, b"too many connections\n",
                                    extra=[("retry-after", "1")])
        await trio.aclose_forcefully(stream)

    async def _open(
        self, stream: trio.abc.Stream, exchange: HttpExchange | None = None,
    ) -> Connection | None:
        remote = _remote_address(stream)
        with trio.move_on_after(self._bus.config.handshake_timeout):
            try:
                if exchange is None:
                    exchange = await self._read_evictably(stream)
                if exchange is None:
                    await trio.aclose_forcefully(stream)
                    return None
                method = exchange.request.method.decode("ascii", "replace")
                if not exchange.is_websocket:
                    path = exchange.handshake_request(remote).path
                    if (path == "/metrics" and self._bus.metrics is not None
                            and self._bus.config.metrics_port is None):
                        status, body, kind, extra = (
                            (200, exposition(self._bus.metrics_registry), CONTENT_TYPE, [])
                            if method in ("GET", "HEAD") else
                            (405, b"/metrics answers GET and HEAD only\n",
                             "text/plain; charset=utf-8", [("allow", "GET, HEAD")]))
                    else:
                        status, body, kind, extra = plain_answer(
                            method, path, self._bus.health())
                    await send_response(stream, exchange, status, body, kind, extra)
                    await stream.aclose()
                    return None
                if method != "GET":
                    # RFC 6455 section 4.1: the opening handshake is a GET.
                    raise HandshakeRejected(
                        405, "a WebSocket handshake must be a GET request",
                        headers=[("allow", "GET")])
                if self._bus._draining:
                    raise HandshakeRejected(503, "the server is shutting down")
                request = exchange.handshake_request(remote)
                self._check_origin(request)
                try:
                    subprotocol = select_subprotocol(request.subprotocols)
                except UnsupportedSubprotocol as exc:
                    raise HandshakeRejected(400, str(exc)) from None
                state: Any = {}
                if self._bus._authenticate is not None:
                    try:
                        state = await maybe_await(self._bus._authenticate(request))
                    except HandshakeRejected:
                        raise
                    except Exception:
                        logger.exception("authenticate hook failed")
                        raise HandshakeRejected(500, "internal error") from None
                try:
                    ws, response = accept_upgrade(exchange, subprotocol)
                except WSRemoteProtocolError as exc:
                    hint = exc.event_hint
                    status = getattr(hint, "status_code", 400)
                    extra = [(k.decode(), v.decode()) for k, v in getattr(hint, "headers", [])]
                    raise HandshakeRejected(status, str(exc), headers=extra) from None
                await stream.send_all(response)
            except HandshakeRejected as exc:
                if self._bus.metrics is not None:
                    self._bus.metrics.refused[exc.status] += 1
                if self._bus._may_log():
                    logger.info("handshake from %s refused: %d %s", _peer(remote),
                                exc.status, quote(exc.message))
                body = (exc.message or "rejected").encode() + b"\n"
                await send_response(stream, exchange, exc.status, body, extra=exc.headers)
                await stream.aclose()
                return None
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                await trio.aclose_forcefully(stream)
                return None
            codec = self._bus._msgpack if codec_for_subprotocol(subprotocol) is MsgpackCodec \
                else self._bus._json
            conn = Connection(self._bus, stream, ws, codec, request, state)
            if self._bus._may_log_connection():
                logger.info("connection %s opened from %s (%s)", conn.sid, _peer(remote),
                            codec.name)
            return conn
        await trio.aclose_forcefully(stream)  # the handshake took too long
        return None

    def _check_origin(self, request: HandshakeRequest) -> None:
        """Refuse cross-site handshakes from browsers (RFC 6455 section 10.2).

        Without ``allowed_origins``, only a page of the bus's own origin (the
        ``Origin`` names the host the request is for) may connect; ``"*"`` lets
        any page connect. Clients that send no ``Origin`` (not browsers) pass.
        """
        origins = [value for name, value in request.headers if name == "origin"]
        if len(origins) > 1:
            raise HandshakeRejected(400, "more than one Origin header")
        if not origins:
            return
        origin = origins[0]
        allowed = self._bus.config.allowed_origins
        if allowed is None:
            host = request.header("host")
            if host is not None and urlsplit(origin).netloc.lower() == host.lower():
                return
        elif "*" in allowed or origin in allowed:
            return
        # The Origin is not echoed back: the body never repeats what a client sent.
        raise HandshakeRejected(403, "this origin may not connect (see allowed_origins)")


def descriptor_capacity() -> int:
    """Connections the descriptor limit allows, keeping a tenth (at least 32) for
    everything else: listeners, logs, the app's own files and sockets, and the
    accepts that must still succeed to be answered 503."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Unix: no descriptor limit to read
        return 10_000
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:  # pragma: no cover - unlimited is rare
        return 1_000_000
    return max(1, soft - max(32, soft // 10))


def _peer(remote: tuple[str, int] | None) -> str:
    return f"{remote[0]}:{remote[1]}" if remote is not None else "a stream"


def _remote_address(stream: trio.abc.Stream) -> tuple[str, int] | None:
    inner = stream.transport_stream if isinstance(stream, trio.SSLStream) else stream
    if isinstance(inner, trio.SocketStream):
        try:
            address = inner.socket.getpeername()
        except OSError:
            return None
        return (str(address[0]), int(address[1]))
    return None
