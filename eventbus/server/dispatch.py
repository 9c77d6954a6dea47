"""Running one client request: hooks, handlers, joins, leaves and publishes.

A connection's worker hands each request here in order (see
:class:`~.connection.Connection`); the answer goes back through the connection,
and nothing raises out of :meth:`Dispatcher.dispatch` but cancellation.
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections.abc import Callable
from time import perf_counter
from typing import TYPE_CHECKING, Any

import trio

from ..errors import (
    Forbidden,
    InternalError,
    RequestError,
    TooManyRooms,
    Unavailable,
    UnknownEvent,
)
from ..protocol import Emit, Join, Leave, Packet, Publish, Resume
from .connection import Connection
from .handlers import Handler, maybe_await
from .metrics import DURATION_BUCKETS, UNKNOWN_EVENT
from .outbox import Delivery

if TYPE_CHECKING:
    from .app import EventBus

__all__ = ["Dispatcher"]

logger = logging.getLogger("eventbus.server")


class Dispatcher:
    """Runs the requests of a bus's connections."""

    def __init__(self, bus: EventBus) -> None:
        self._bus = bus
        #: Requests being handled now, all connections together (a shutdown waits
        #: for them, up to ``drain_timeout``).
        self.running = 0

    async def dispatch(self, conn: Connection, packet: Packet) -> None:
        """Handle one request; answers it, never raises (but Cancelled)."""
        ack_id: int | None = getattr(packet, "ack_id", None)
        if self._bus._draining:
            conn.answer_error(ack_id, Unavailable("the server is shutting down"))
            return
        self.running += 1
        conn.requests += 1
        try:
            if isinstance(packet, Emit):
                await self._handle_emit(conn, packet)
            elif isinstance(packet, Publish):
                await self.authorize(self._bus._authorize_publish, conn, packet.room, packet.event)
                envelope = self._bus._router.envelope(packet.room, packet.event, packet.data, conn,
                                                      Delivery.RELIABLE, None, packet.publish_id)
                if ack_id is None:
                    self._bus._router.publish_nowait(envelope)
                else:
                    published = await self._bus._router.publish(envelope)
                    conn.answer(ack_id, published.position.to_wire()
                                if published.nodes or published.kept else None)
            elif isinstance(packet, Join):
                limit = self._bus.config.max_rooms
                if packet.room not in conn.rooms:
                    if len(conn.rooms) >= limit:
                        raise TooManyRooms(f"a connection may join {limit} rooms")
                    await self.authorize(self._bus._authorize_join, conn, packet.room)
                position = await self._bus._router.join(conn, packet.room)
                conn.answer(ack_id, position.to_wire())
            elif isinstance(packet, Leave):
                self._bus._router.leave(conn, packet.room)
                conn.answer(ack_id, None)
            elif isinstance(packet, Resume):
                verdicts = await self._bus._recovery.resume(conn, packet, trio.current_time())
                conn.answer(ack_id, verdicts)
        except RequestError as exc:
            conn.answer_error(ack_id, exc)
        except Exception:
            logger.exception("error handling %s from %s", type(packet).__name__, conn.sid)
            conn.answer_error(ack_id, InternalError("internal error"))
        finally:
            self.running -= 1

    async def authorize(self, hook: Callable[..., Any] | None, *args: Any) -> None:
        """Run a room authorization hook (plain or async); raise Forbidden on no."""
        if hook is None:
            if self._bus.config.open_rooms:
                return
            raise Forbidden("rooms are closed to clients on this server")
        allowed = await maybe_await(hook(*args))
        if not allowed:
            raise Forbidden(f"not allowed for room {args[1]!r}")

    async def _handle_emit(self, conn: Connection, packet: Emit) -> None:
        handler = self._bus._handlers.get(packet.event)
        if handler is None and self._bus._catch_all is None:
            raise UnknownEvent(f"no handler for event {packet.event!r}")
        if handler is None or handler.concurrency == 1:
            await self._run_handler(conn, packet, handler)
            return
        limiter = conn.limiters.get(packet.event)
        if limiter is None:
            limiter = conn.limiters[packet.event] = trio.CapacityLimiter(handler.concurrency)
        # Waiting here (not in the spawned task) keeps start order and the bound. Each
        # run borrows with a token of its own: packets compare equal by value.
        token = object()
        await limiter.acquire_on_behalf_of(token)
        assert conn._nursery is not None
        conn._nursery.start_soon(self._run_limited, conn, packet, handler, limiter, token)

    async def _run_limited(
        self, conn: Connection, packet: Emit, handler: Handler, limiter: trio.CapacityLimiter,
        token: object,
    ) -> None:
        self.running += 1
        try:
            await self._run_handler(conn, packet, handler)
        except RequestError as exc:
            conn.answer_error(packet.ack_id, exc)
        except Exception:
            logger.exception("error in handler for %r from %s", packet.event, conn.sid)
            conn.answer_error(packet.ack_id, InternalError("internal error"))
        finally:
            self.running -= 1
            limiter.release_on_behalf_of(token)

    async def _run_handler(self, conn: Connection, packet: Emit, handler: Handler | None) -> None:
        metrics = self._bus.metrics
        # The wall clock, cheaper than trio's: what an operator wants is real time.
        started = perf_counter() if metrics is not None else 0.0
        try:
            if handler is None:
                assert self._bus._catch_all is not None
                result = self._bus._catch_all.func(conn, packet.event, packet.data)
            else:
                result = handler.func(conn, handler.structure(packet.event, packet.data))
            result = await maybe_await(result)
        finally:
            if metrics is not None:
                elapsed = perf_counter() - started
                # Labelled by registered events only: the label's values stay bounded.
                # Inline, not a method: on W1's path every call is a measurable share.
                name = packet.event if handler is not None else UNKNOWN_EVENT
                histogram = metrics.handlers.get(name) or metrics.new_histogram(name)
                histogram.buckets[bisect_left(DURATION_BUCKETS, elapsed)] += 1
                histogram.sum += elapsed
        conn.answer(packet.ack_id, Handler.unstructure(result))
