"""Helpers for client tests.

Rules (as in trio-websocket's own tests): loopback only; a server on port 0 (the
kernel picks a free port); every test that does I/O runs under ``trio.fail_after``;
synchronisation by events (hooks, handlers, ``trio.Event``), never by sleeping.
Tests over real sockets use the real clock; tests over memory streams
(:mod:`eventbus.testing`) may use ``autojump_clock``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import trio
import trio_websocket

from eventbus import Connection, EventBus, Forbidden
from eventbus.protocol import JSON_SUBPROTOCOL, ErrorReply, JsonCodec, Packet, Resume, Role, Welcome


class Bus(EventBus):
    """A bus whose ``never`` handler sets :attr:`hung` when it starts hanging."""

    hung: trio.Event


def make_bus(**settings: Any) -> Bus:
    """Open rooms (but room "closed"), and handlers ``echo``, ``fail``, ``crash``,
    ``ask`` (calls the client back with event "question") and ``never`` (hangs)."""
    settings.setdefault("open_rooms", True)
    bus = Bus(**settings)
    bus.hung = trio.Event()

    @bus.on("echo")
    async def echo(sock: Connection, data: Any) -> Any:
        return data

    @bus.on("fail")
    async def fail(sock: Connection, data: Any) -> None:
        raise Forbidden("members only")

    @bus.on("crash")
    async def crash(sock: Connection, data: Any) -> None:
        raise RuntimeError("secret")

    @bus.on("ask")
    async def ask(sock: Connection, data: Any) -> Any:
        try:
            return {"answer": await sock.call("question", data, timeout=5)}
        except Exception as exc:  # the test reads what the client sent
            return {"error": str(exc), "type": type(exc).__name__}

    # Concurrent: a hanging call must not hold up the connection's next requests.
    @bus.on("never", concurrency=8)
    async def never(sock: Connection, data: Any) -> None:
        bus.hung.set()
        await trio.sleep_forever()

    @bus.authorize_join
    def may_join(sock: Connection, room: str) -> bool:
        return room != "closed"

    @bus.authorize_publish
    def may_publish(sock: Connection, room: str, event: str) -> bool:
        return room != "closed"

    return bus


class Server:
    """A bus served on 127.0.0.1 that can be stopped and started again on its port."""

    def __init__(self, nursery: trio.Nursery, bus: EventBus) -> None:
        self.nursery = nursery
        self.bus = bus
        self.port = 0
        self._scope: trio.CancelScope | None = None
        self._stopped = trio.Event()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    async def start(self, bus: EventBus | None = None) -> None:
        if bus is not None:
            self.bus = bus
        self._scope = trio.CancelScope()
        self._stopped = trio.Event()
        listeners = await self.nursery.start(self._serve, self._scope, self._stopped)
        self.port = listeners[0].socket.getsockname()[1]

    async def _serve(
        self, scope: trio.CancelScope, stopped: trio.Event,
        task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            with scope:
                await self.bus.serve("127.0.0.1", self.port, task_status=task_status)
        finally:
            stopped.set()

    async def stop(self) -> None:
        """Stop abruptly (cancel): connections drop without a close frame."""
        assert self._scope is not None
        self._scope.cancel()
        await self._stopped.wait()


@asynccontextmanager
async def serving(bus: EventBus) -> AsyncIterator[Server]:
    async with trio.open_nursery() as nursery:
        server = Server(nursery, bus)
        await server.start()
        yield server
        nursery.cancel_scope.cancel()


class Peer:
    """The server's end of one connection of a :func:`scripted` server."""

    def __init__(self, ws: trio_websocket.WebSocketConnection, number: int) -> None:
        self.ws = ws
        self.number = number  # 1 for the first connection, 2 after a reconnect...
        self.codec = JsonCodec(Role.SERVER)
        #: Answer RESUME with resume_failed, as a server that keeps no sessions does
        #: (then :meth:`receive` returns the packet after it).
        self.refuse_resume = True

    async def send(self, *packets: Packet) -> None:
        for packet in packets:
            await self.ws.send_message(self.codec.encode(packet).decode())

    async def receive(self) -> Packet:
        while True:
            packet = self.codec.decode(await self.ws.get_message())
            if not (isinstance(packet, Resume) and self.refuse_resume):
                return packet
            await self.send(ErrorReply(packet.ack_id, "resume_failed", "no sessions here"))


@asynccontextmanager
async def scripted(script: Callable[[Peer], Awaitable[None]]) -> AsyncIterator[str]:
    """A server on 127.0.0.1 that sends WELCOME, then runs ``script(peer)`` for each
    connection, to put packets on the wire in an order the real server may produce
    but not on demand. Yields its URL. A connection closes when its script returns
    (code 1000 unless the script closed it)."""

    count = 0

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        nonlocal count
        count += 1
        peer = Peer(await request.accept(subprotocol=JSON_SUBPROTOCOL), count)
        await peer.send(Welcome(f"scripted{count}", "t" * 43))
        await script(peer)

    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(
            trio_websocket.serve_websocket, handler, "127.0.0.1", 0, ssl_context=None))
        yield f"ws://127.0.0.1:{server.port}/"
        nursery.cancel_scope.cancel()
