"""The asyncio client: the trio client's API over asyncio, and the same core.

What a packet means, what to send, what to keep across connections, and when to
stop reconnecting are decided by :mod:`eventbus.client.core`, which the trio
client uses too; this module only opens connections (the ``websockets``
package's asyncio implementation), waits, and runs tasks, in the same structure
as the trio client: one supervisor that connects, resumes and reconnects with
backoff; per connection, a reader (decodes, resolves requests, runs handlers,
fills subscriptions) and a watchdog (pings a silent server, declares the
connection dead after ``ping_interval + ping_timeout``). Every task belongs to a
``TaskGroup`` owned by the ``connect`` block, and every wait has a timeout or
ends with the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from types import MappingProxyType
from typing import Any, TypeVar

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect

from ..client.backoff import Backoff
from ..client.client import subprotocols_for
from ..client.core import (
    LinkCore,
    SessionState,
    position_from,
    read_welcome,
    reconnect_verdict,
)
from ..client.handlers import Handler, call_hook
from ..client.messages import Incoming, Recovery
from ..client.shared import SharedClient
from ..client.subscription import Subscription as _TrioSubscription
from ..client.transport import MAX_MESSAGE_SIZE, Headers, check_url
from ..codes import CloseCode
from ..errors import (
    CallTimeout,
    ConnectionClosed,
    EventBusError,
    HandshakeRejected,
    RemoteProtocolError,
)
from ..protocol import (
    NAME_MAX_BYTES,
    Emit,
    Join,
    Leave,
    Packet,
    Position,
    Role,
    WelcomeOptions,
    check_name,
    codec_for_subprotocol,
)

__all__ = ["Client", "Subscription", "connect"]

logger = logging.getLogger("eventbus.client")

F = TypeVar("F", bound=Callable[..., Any])


class Subscription(_TrioSubscription):
    """:class:`eventbus.Subscription`, waiting the asyncio way."""

    def _make_waiter(self) -> asyncio.Event:
        return asyncio.Event()

    async def _wait(self) -> None:
        self._lot.clear()
        await self._lot.wait()

    def _wake(self) -> None:
        self._lot.set()

    def receive_nowait(self) -> Incoming:
        """The next buffered event.

        Raises:
            asyncio.QueueEmpty: nothing is buffered.
        """
        if not self._buffer:
            raise asyncio.QueueEmpty
        return self._take()


def _closed(error: ConnectionClosed) -> ConnectionClosed:
    copy = ConnectionClosed(str(error.args[0]) if error.args else "connection closed",
                            close_code=error.close_code, reason=error.reason)
    copy.__cause__ = error.__cause__
    return copy


def _convert(exc: BaseException, target: str) -> EventBusError:
    """The eventbus exception for what websockets (or the network) raised."""
    if isinstance(exc, websockets.exceptions.InvalidStatus):
        response = exc.response
        body = response.body.decode("utf-8", "replace").strip() if response.body else ""
        return HandshakeRejected(response.status_code, body)
    if isinstance(exc, websockets.exceptions.ConnectionClosed):
        # The message says what happened; str() of the error adds the close code.
        frame = exc.rcvd or exc.sent
        if frame is None:
            return ConnectionClosed(f"connection to {target} lost", close_code=1006)
        return ConnectionClosed("connection closed", close_code=frame.code,
                                reason=frame.reason)
    if isinstance(exc, TimeoutError):
        return ConnectionClosed(f"timed out connecting to {target}")
    if isinstance(exc, OSError):
        return ConnectionClosed(f"cannot connect to {target}: {exc.strerror or exc}")
    return ConnectionClosed(f"the connection to {target} failed: {exc!r}")


async def _discard(ws: ClientConnection, wait: float) -> None:
    """Close a connection: the closing handshake for ``wait`` seconds at most, then the
    TCP connection at once, whatever the peer does (a server that never answers the
    close frame must not leave the socket open)."""
    try:
        async with asyncio.timeout(wait):
            await ws.close()
    except (websockets.exceptions.WebSocketException, OSError):  # TimeoutError too
        pass
    finally:
        ws.transport.abort()


class _Pending:
    __slots__ = ("future", "position_of")

    def __init__(self, position_of: str | None) -> None:
        self.future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.position_of = position_of

    def resolve(self, value: Any) -> None:
        if not self.future.done():
            self.future.set_result(value)

    def reject(self, error: EventBusError) -> None:
        if not self.future.done():
            self.future.set_exception(error)


class _Link(LinkCore):
    """One connection: the core's view of it, and its asyncio I/O."""

    def __init__(self, ws: ClientConnection, core: LinkCore, target: str) -> None:
        super().__init__(core.codec, core.welcome)
        self.ws = ws
        self.target = target
        self.pending: dict[int, _Pending] = {}
        self.error: ConnectionClosed | None = None
        self.reader: asyncio.Task[Any] | None = None
        self.lost = asyncio.Event()
        loop = asyncio.get_running_loop()
        self.began = self.last_heard = loop.time()
        limit = self.max_pending
        self.slots = asyncio.Semaphore(limit) if limit > 0 else None

    async def send(self, payload: bytes) -> None:
        if self.error is not None:
            raise _closed(self.error)
        try:
            await self.ws.send(self.message(payload))
        except (websockets.exceptions.ConnectionClosed, OSError) as exc:
            raise _convert(exc, self.target) from exc

    def fail(self, error: ConnectionClosed) -> bool:
        if self.error is not None:
            return False
        self.error = error
        for pending in self.pending.values():
            pending.reject(_closed(error))
        self.pending.clear()
        self.lost.set()
        return True


class Client(SharedClient):
    """A connection to an eventbus server from asyncio code that survives
    reconnections: :class:`eventbus.Client`'s API and behaviour (read its
    documentation), with asyncio's conventions. Made and run by :func:`connect`.

    Handlers registered with :meth:`on` run in the client's reader task, one at a
    time; inside one, :meth:`emit` works, but waiting for an answer raises
    ``RuntimeError`` (start a task for it). Cancelling a task that awaits a request
    cancels only its wait.

    .. versionadded:: 0.2.0
    """

    def __init__(
        self, url: str, *, codec: str = "json", headers: Headers | None = None,
        subprotocols: Sequence[str] | None = None, reconnect: bool | Backoff = True,
        ssl_context: ssl.SSLContext | None = None, request_timeout: float = 10.0,
        connect_timeout: float = 10.0, wait_reconnect: float = 10.0,
        close_timeout: float = 2.0, max_message_size: int = MAX_MESSAGE_SIZE,
        offline_limit: int = 1000,
    ) -> None:
        check_url(url)
        if ssl_context is not None and not url.startswith("wss://"):
            raise ValueError("ssl_context needs a wss:// URL")
        self._url = url
        self._target = url
        self._subprotocols = (list(subprotocols) if subprotocols is not None
                              else subprotocols_for(codec))
        self._headers = list(headers.items() if isinstance(headers, Mapping)
                             else headers or ())
        self._ssl = ssl_context
        self.backoff: Backoff | None = (
            Backoff() if reconnect is True else reconnect if isinstance(reconnect, Backoff)
            else None)
        self.request_timeout = request_timeout
        self.connect_timeout = connect_timeout
        self.wait_reconnect = wait_reconnect
        self.close_timeout = close_timeout
        self.max_message_size = max_message_size
        self.offline_limit = offline_limit
        #: Seconds a RESUME may take, replay included.
        self.resume_timeout = max(60.0, request_timeout)
        #: What the client keeps across connections (the sans-IO core's).
        self.state = SessionState()
        self._handlers: dict[str, Handler] = {}
        self._on_gap: Callable[..., Any] | None = None
        self._on_error: Callable[..., Any] | None = None
        self._on_reconnect: Callable[..., Any] | None = None
        self._on_disconnect: Callable[..., Any] | None = None
        self._on_resume: Callable[..., Any] | None = None
        self._subscriptions: list[Subscription] = []
        self._current: _Link | None = None
        self._link: _Link | None = None
        # Set, and replaced, whenever the link or the final state changes.
        self._changed = asyncio.Event()
        self._started = False
        self._closing = False
        self._final: ConnectionClosed | None = None
        self._reconnects = 0
        self._offline = 0

    def __repr__(self) -> str:
        state = "connected" if self._link else "closed" if self._final else "reconnecting"
        return f"<eventbus.asyncio.Client {self._target} {state} rooms={sorted(self.rooms)}>"

    # --- state ------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._link is not None

    @property
    def closed(self) -> bool:
        return self._final is not None

    @property
    def sid(self) -> str | None:
        return self._current.welcome.sid if self._current is not None else None

    @property
    def codec(self) -> str | None:
        return self._current.codec.name if self._current is not None else None

    @property
    def options(self) -> WelcomeOptions | None:
        return self._current.welcome.options if self._current is not None else None

    @property
    def rooms(self) -> frozenset[str]:
        return self.state.rooms

    @property
    def positions(self) -> Mapping[str, Position]:
        return dict(self.state.positions)

    @property
    def recoveries(self) -> Mapping[str, Recovery]:
        return self.state.recoveries

    @property
    def generation(self) -> int:
        return self.state.generation

    def statistics(self) -> dict[str, int]:
        link = self._current
        return {
            "reconnects": self._reconnects,
            "missed": self.state.missed,
            "duplicates": self.state.duplicates,
            "dropped": sum(sub.dropped for sub in self._subscriptions),
            "pending": len(link.pending) if link is not None else 0,
        }

    # --- registration -----------------------------------------------------------------

    def on(self, event: str) -> Callable[[F], F]:
        check_name(event, "event", NAME_MAX_BYTES, reserved_ok=True)

        def register(func: F) -> F:
            self._handlers[event] = Handler(func)
            return func

        return register

    def on_gap(self, func: F) -> F:
        self._on_gap = func
        return func

    def on_error(self, func: F) -> F:
        self._on_error = func
        return func

    def on_reconnect(self, func: F) -> F:
        self._on_reconnect = func
        return func

    def on_resume(self, func: F) -> F:
        self._on_resume = func
        return func

    def on_disconnect(self, func: F) -> F:
        self._on_disconnect = func
        return func

    # --- requests -----------------------------------------------------------------------

    async def emit(self, event: str, data: Any = None) -> None:
        self._check_name(event, "event")
        link = await self._wait_link()
        await link.send(link.encode(Emit(event, data)))

    async def call(self, event: str, data: Any = None, *, timeout: float | None = None) -> Any:
        self._check_name(event, "event")
        return await self._request(partial(Emit, event, data), timeout, f"call {event!r}")

    async def join(self, room: str, *, timeout: float | None = None) -> Position:
        self._check_name(room, "room")
        state = self.state
        known = room in state.rooms
        state.explicit.add(room)
        try:
            return await self._join_now(room, timeout)
        except BaseException:
            if not known:
                state.explicit.discard(room)
                if room not in state.rooms:
                    state.positions.pop(room, None)
            raise

    async def leave(self, room: str, *, timeout: float | None = None) -> None:
        self._check_name(room, "room")
        state = self.state
        state.explicit.discard(room)
        if state.held[room]:
            return
        state.positions.pop(room, None)
        link = self._link
        if link is not None:
            await self._request_on(link, partial(Leave, room), timeout, f"leave {room!r}")

    async def publish(
        self, room: str, event: str, data: Any = None, *, timeout: float | None = None,
    ) -> Position | None:
        return await self._publish(room, event, data, timeout)

    @asynccontextmanager
    async def subscribe(self, *rooms: str, buffer: int = 1000) -> AsyncIterator[Subscription]:
        if not rooms:
            raise ValueError("subscribe to at least one room")
        for room in rooms:
            self._check_name(room, "room")
        subscription = Subscription(rooms, buffer)
        self._subscriptions.append(subscription)
        held: list[str] = []
        state = self.state
        try:
            for room in sorted(subscription.rooms):
                joined = room in state.rooms
                state.held[room] += 1
                held.append(room)
                if not joined:
                    await self._join_now(room, None)
            yield subscription
        finally:
            self._subscriptions.remove(subscription)
            subscription._end()
            await asyncio.shield(self._release(held))

    async def _release(self, rooms: list[str]) -> None:
        state = self.state
        for room in rooms:
            state.held[room] -= 1
            if state.held[room] <= 0:
                del state.held[room]
                if room not in state.explicit:
                    state.positions.pop(room, None)
                    link = self._link
                    if link is not None and not self._in_reader(link):
                        try:
                            async with asyncio.timeout(self.close_timeout):
                                await self._request_on(link, partial(Leave, room), None,
                                                       f"leave {room!r}")
                        except (ConnectionClosed, TimeoutError):
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

    async def _request(self, make: Callable[[int], Packet], timeout: float | None, what: str,
                       *, position_of: str | None = None) -> Any:
        link = await self._wait_link()
        return await self._request_on(link, make, timeout, what, position_of=position_of)

    async def _request_on(self, link: _Link, make: Callable[[int], Packet],
                          timeout: float | None, what: str, *,
                          position_of: str | None = None) -> Any:
        if self._in_reader(link):
            raise RuntimeError(
                f"cannot {what} and wait for its answer inside an event handler: the answer "
                "is read by the task that runs the handler. Start a task for it instead.")
        limit = self.request_timeout if timeout is None else timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        slots = link.slots
        if slots is not None:
            try:
                async with asyncio.timeout_at(deadline):
                    await slots.acquire()
            except TimeoutError:
                raise CallTimeout(f"no answer to {what} within {limit:g} s (it waited behind "
                                  f"{len(link.pending)} requests, the server's max_pending)"
                                  ) from None
            if link.error is not None:
                slots.release()
                raise _closed(link.error)
        try:
            ack_id = link.allocate(link.pending)
            payload = link.encode(make(ack_id))
            pending = link.pending[ack_id] = _Pending(position_of)
            try:
                # Not under the deadline: a send cut short would break the stream.
                await link.send(payload)
                async with asyncio.timeout_at(deadline):
                    return await asyncio.shield(pending.future)
            except TimeoutError:
                raise CallTimeout(f"no answer to {what} within {limit:g} s") from None
            finally:
                link.pending.pop(ack_id, None)
        finally:
            if slots is not None:
                slots.release()

    def _in_reader(self, link: _Link) -> bool:
        return asyncio.current_task() is link.reader

    async def _wait_link(self) -> _Link:
        current = self._current
        if current is not None and self._in_reader(current):
            return current  # a handler emitting while the session is being resumed
        if self._link is not None:
            return self._link
        if self._final is not None:
            raise _closed(self._final)
        if self._offline >= self.offline_limit:
            raise ConnectionClosed(
                f"not connected to {self._target}, and {self._offline} operations already"
                f" wait for the reconnection (offline_limit): not queued")
        self._offline += 1
        try:
            async with asyncio.timeout(self.wait_reconnect):
                while self._link is None and self._final is None:
                    await self._changed.wait()
        except TimeoutError:
            raise ConnectionClosed(f"not connected to {self._target}: no reconnection within "
                                   f"{self.wait_reconnect:g} s") from None
        finally:
            self._offline -= 1
        if self._link is not None:
            return self._link
        assert self._final is not None
        raise _closed(self._final)

    def _notify_changed(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    # --- closing ----------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the connection (code 1000) and stop reconnecting; idempotent."""
        if self._closing:
            return
        self._closing = True
        link = self._current
        if link is not None and link.error is None:
            await _discard(link.ws, self.close_timeout)
        self._finish(ConnectionClosed(
            f"the client closed its connection to {self._target}", close_code=CloseCode.NORMAL))

    def _finish(self, error: ConnectionClosed) -> None:
        if self._final is None:
            self._final = error
        self._link = None
        for subscription in self._subscriptions:
            subscription._fail(error)
        self._notify_changed()

    def _lose(self, link: _Link, error: ConnectionClosed) -> None:
        if link.fail(error):
            if self._link is link:
                self._link = None
            self._notify_changed()

    # --- the supervisor -------------------------------------------------------------------

    async def _run(self, started: asyncio.Future[None]) -> None:
        failures = 0
        loop = asyncio.get_running_loop()
        while True:
            link: _Link | None = None
            error: ConnectionClosed | HandshakeRejected
            try:
                link = await self._connect()
                await self._serve(link, started)
                error = link.error or ConnectionClosed("connection closed")
            except (ConnectionClosed, HandshakeRejected) as exc:
                if not self._started:
                    if not started.done():
                        started.set_exception(exc)
                    return
                error = exc
            if link is not None:
                self._lose(link, error if isinstance(error, ConnectionClosed)
                                 else ConnectionClosed(str(error)))
                assert link.error is not None
                error = link.error
                self._current = None
                await _discard(link.ws, self.close_timeout)
                if self.backoff is not None and loop.time() - link.began >= \
                        self.backoff.reset_after:
                    failures = 0
            if self._closing:
                return
            if link is not None:
                await call_hook(self._on_disconnect, error)
            verdict = reconnect_verdict(self.backoff, error, failures)
            if verdict is not None:
                final = (ConnectionClosed(f"connection to the server closed; {verdict}",
                                          close_code=error.close_code, reason=error.reason)
                         if isinstance(error, ConnectionClosed)
                         else ConnectionClosed(f"reconnecting failed; {verdict}"))
                final.__cause__ = error
                logger.warning("not reconnecting to %s: %s", self._target, final)
                self._finish(final)
                return
            assert self.backoff is not None
            delay = self.backoff.delay(failures)
            failures += 1
            logger.warning("connection to %s lost (%s); reconnecting in %.2f s",
                           self._target, error, delay)
            await asyncio.sleep(delay)

    async def _connect(self) -> _Link:
        try:
            ws = await ws_connect(
                self._url, subprotocols=self._subprotocols,  # type: ignore[arg-type]
                additional_headers=self._headers, ssl=self._ssl,
                open_timeout=self.connect_timeout, close_timeout=self.close_timeout,
                max_size=self.max_message_size, ping_interval=None, compression=None,
                proxy=None)
        except (websockets.exceptions.WebSocketException, OSError, TimeoutError) as exc:
            raise _convert(exc, self._target) from exc
        try:
            try:
                codec = codec_for_subprotocol(ws.subprotocol)(Role.CLIENT)
            except KeyError:
                raise ConnectionClosed(f"{self._target} chose subprotocol "
                                       f"{ws.subprotocol!r}, which was not offered") from None
            try:
                async with asyncio.timeout(self.connect_timeout):
                    message = await ws.recv()
            except TimeoutError:
                raise ConnectionClosed(f"no welcome from {self._target} within "
                                       f"{self.connect_timeout:g} s") from None
            except websockets.exceptions.ConnectionClosed as exc:
                raise _convert(exc, self._target) from exc
            welcome = read_welcome(codec, message, self._target)
        except BaseException:
            await _discard(ws, self.close_timeout)
            raise
        link = _Link(ws, LinkCore(codec, welcome), self._target)
        self._current = link
        return link

    async def _serve(self, link: _Link, started: asyncio.Future[None]) -> None:
        async with asyncio.TaskGroup() as tasks:
            link.reader = tasks.create_task(self._read(link))
            watchdog = tasks.create_task(self._watch(link))
            try:
                verdicts: dict[str, Recovery] = {}
                if self._started:
                    verdicts = await self._resume(link)
                else:
                    self.state.generation += 1
                if link.error is None:
                    self.state.link_ready(link)
                    self._link = link
                    self._notify_changed()
                if not self._started:
                    self._started = True
                    started.set_result(None)
                else:
                    self._reconnects += 1
                    logger.info("reconnected to %s", self._target)
                    if verdicts:
                        await call_hook(self._on_resume, MappingProxyType(verdicts))
                    await call_hook(self._on_reconnect)
                await link.lost.wait()
            finally:
                watchdog.cancel()
                link.reader.cancel()

    # --- the reader and the watchdog -----------------------------------------------------

    async def _read(self, link: _Link) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                message = await link.ws.recv()
            except (websockets.exceptions.ConnectionClosed, OSError) as exc:
                error = _convert(exc, self._target)
                assert isinstance(error, ConnectionClosed)
                self._lose(link, error)
                return
            link.last_heard = loop.time()
            try:
                packet = link.codec.decode(message)
            except RemoteProtocolError as exc:
                logger.warning("ignoring an invalid packet from %s: %s", self._target, exc)
                continue
            await self._on_packet(link, packet)

    async def _watch(self, link: _Link) -> None:
        """Ping after ``ping_interval`` of silence; no pong within ``ping_timeout``
        means the connection is dead (PROTOCOL.md section 11)."""
        options = link.welcome.options
        interval = options.ping_interval / 1000
        timeout = options.ping_timeout / 1000
        if interval <= 0 or timeout <= 0:
            return
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(max(0.0, link.last_heard + interval - loop.time()))
            if loop.time() < link.last_heard + interval:
                continue
            try:
                async with asyncio.timeout(timeout):
                    pong = await link.ws.ping()
                    await pong
                link.last_heard = loop.time()
                continue
            except TimeoutError:  # first: TimeoutError is an OSError
                pass
            except (websockets.exceptions.ConnectionClosed, OSError):
                return  # the reader reports it
            self._lose(link, ConnectionClosed(
                f"{self._target} was silent for {interval + timeout:g} s (ping_interval + "
                "ping_timeout): the connection is dead", close_code=1006))
            return


@asynccontextmanager
async def _open(client: Client) -> AsyncIterator[Client]:
    # The supervisor is this block's own task, awaited before the block ends. Not in a
    # TaskGroup: an exception of the app's block would come out wrapped in a group.
    started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    supervisor = asyncio.create_task(client._run(started))
    try:
        await started  # raises if the first connection failed
        yield client
    finally:
        await asyncio.shield(client.aclose())
        supervisor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await supervisor


def connect(
    url: str, *, codec: str = "json", headers: Headers | None = None,
    subprotocols: Sequence[str] | None = None, reconnect: bool | Backoff = True,
    ssl_context: ssl.SSLContext | None = None, request_timeout: float = 10.0,
    connect_timeout: float = 10.0, wait_reconnect: float = 10.0, close_timeout: float = 2.0,
    max_message_size: int = MAX_MESSAGE_SIZE, offline_limit: int = 1000,
) -> AbstractAsyncContextManager[Client]:
    """Connect to an eventbus server from asyncio: ``async with connect(url) as
    client: ...``, with the arguments of :func:`eventbus.connect`.

    Raises:
        HandshakeRejected: the server answered the handshake with an HTTP status.
        ConnectionClosed: the server could not be reached or closed at once.
        ValueError: a bad URL or codec.

    .. versionadded:: 0.2.0
    """
    return _open(Client(
        url, codec=codec, headers=headers, subprotocols=subprotocols, reconnect=reconnect,
        ssl_context=ssl_context, request_timeout=request_timeout,
        connect_timeout=connect_timeout, wait_reconnect=wait_reconnect,
        close_timeout=close_timeout, max_message_size=max_message_size,
        offline_limit=offline_limit))

