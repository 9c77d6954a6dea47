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
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import trio
import trio_websocket

from ..errors import (
    CallTimeout,
    ConnectionClosed,
    HandshakeRejected,
    RemoteProtocolError,
)
from ..protocol import (
    Packet,
    Role,
    Welcome,
    codec_for_subprotocol,
)
from .backoff import Backoff
from .core import (
    NO_RECONNECT_CLOSE_CODES,
    SessionState,
    position_from,
    read_welcome,
    reconnect_verdict,
)
from .handlers import Handler, call_hook
from .link import Link, Pending, closed_copy
from .messages import Recovery
from .shared import SharedClient
from .subscription import Subscription
from .transport import Opener, map_exceptions

__all__ = ["NO_RECONNECT_CLOSE_CODES", "Session", "position_from"]

logger = logging.getLogger("eventbus.client")

class Session(SharedClient):
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
        #: What the client keeps across connections (the sans-IO core's).
        self.state = SessionState()
        # The same objects as the state's, under the names the requests use.
        self._explicit = self.state.explicit
        self._held = self.state.held
        self._positions = self.state.positions
        self._subscriptions: list[Subscription] = []
        self._current: Link | None = None  # the link being served, ready or not
        self._link: Link | None = None  # the link requests may use (rooms rejoined)
        self._changed = trio.lowlevel.ParkingLot()
        self._started = False
        self._closing = False
        self._final: ConnectionClosed | None = None
        self._reconnects = 0
        #: Seconds a RESUME may take, replay included.
        self.resume_timeout = max(60.0, request_timeout)

    @property
    def generation(self) -> int:
        """The server sessions this client has had (see :class:`SessionState`)."""
        return self.state.generation

    @property
    def recoveries(self) -> Mapping[str, Recovery]:
        """The verdicts of the last RESUME, by room."""
        return self.state.recoveries

    @property
    def rooms(self) -> frozenset[str]:
        """The rooms this client is in (joined, or held by a subscription); they are
        resumed, or joined again, after a reconnect."""
        return self.state.rooms

    # --- requests on a link ------------------------------------------------------

    async def _request_on(
        self, link: Link, make: Callable[[int], Packet], timeout: float | None, what: str,
        *, position_of: str | None = None,
    ) -> Any:
        """Send a request on ``link`` and wait for its answer.

        Args:
            position_of: The room whose position the ACK carries; the reader records
                it when it reads the ACK, in order with the room's events (recording
                when the requester wakes up could overwrite a later ROOM_EVENT).
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
            ack_id = link.allocate_id()
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
            verdict = reconnect_verdict(self.backoff, error, failures)
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

    async def _open_link(self, ws: trio_websocket.WebSocketConnection) -> Link:
        try:
            codec = codec_for_subprotocol(ws.subprotocol)(Role.CLIENT)
        except KeyError:
            raise ConnectionClosed(
                f"{self._target} chose subprotocol {ws.subprotocol!r}, which was not offered"
            ) from None
        welcome: Welcome | None = None
        with trio.move_on_after(self.connect_timeout):
            welcome = read_welcome(codec, await ws.get_message(), self._target)
        if welcome is None:
            raise ConnectionClosed(f"no welcome from {self._target} within "
                                   f"{self.connect_timeout:g} s")
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
                    self.state.generation += 1
                if link.error is None:
                    self.state.link_ready(link)
                    self._link = link
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


def _closed_because(error: ConnectionClosed | HandshakeRejected, why: str) -> ConnectionClosed:
    if isinstance(error, ConnectionClosed):
        closed = ConnectionClosed(f"connection to the server closed; {why}",
                                  close_code=error.close_code, reason=error.reason)
    else:
        closed = ConnectionClosed(f"reconnecting failed; {why}")
    closed.__cause__ = error
    return closed
