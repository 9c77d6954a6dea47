"""Helpers for server tests over real sockets on 127.0.0.1.

Rules: loopback only, port 0 (the kernel picks a free port), every wait bounded
(``recv`` has a timeout; tests that do I/O run under ``trio.fail_after``). These
tests speak the raw protocol through trio-websocket, so they check the server
against PROTOCOL.md, not against our own client.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio_websocket

from eventbus import EventBus
from eventbus.protocol import (
    Codec,
    JsonCodec,
    MsgpackCodec,
    Packet,
    Role,
    Welcome,
)

SUBPROTOCOLS = {"json": "eventbus.v1.json", "msgpack": "eventbus.v1.msgpack"}


@asynccontextmanager
async def serving(bus: EventBus, host: str = "127.0.0.1") -> AsyncIterator[int]:
    """Run ``bus`` on a free port for the duration of the block; yields the port."""
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(bus.serve, host, 0)
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


class Raw:
    """A protocol-level client: sends packets or raw frames, receives packets."""

    def __init__(self, ws: trio_websocket.WebSocketConnection, codec: Codec) -> None:
        self.ws = ws
        self.codec = codec
        self.welcome: Welcome | None = None

    @property
    def sid(self) -> str:
        assert self.welcome is not None
        return self.welcome.sid

    async def send(self, packet: Packet) -> None:
        payload = self.codec.encode(packet)
        await self.ws.send_message(payload if self.codec.binary else payload.decode())

    async def send_raw(self, message: str | bytes) -> None:
        await self.ws.send_message(message)

    async def recv(self, timeout: float = 5) -> Packet:
        with trio.fail_after(timeout):
            return self.codec.decode(await self.ws.get_message())

    async def recv_nothing(self, wait: float = 0.2) -> None:
        """Assert that no packet arrives within ``wait`` seconds."""
        with trio.move_on_after(wait):
            message = await self.ws.get_message()
            raise AssertionError(f"unexpected packet: {self.codec.decode(message)!r}")


@asynccontextmanager
async def raw_client(
    port: int, codec: str = "json", *, path: str = "/", headers: Sequence[tuple[str, str]] = (),
    subprotocols: Sequence[str] | None = None,
) -> AsyncIterator[Raw]:
    """Connect, read the welcome, yield a :class:`Raw` client."""
    offered = [SUBPROTOCOLS[codec]] if subprotocols is None else list(subprotocols)
    async with trio_websocket.open_websocket_url(
        f"ws://127.0.0.1:{port}{path}", subprotocols=offered, extra_headers=list(headers),
    ) as ws:
        client_codec: Codec = (MsgpackCodec if codec == "msgpack" else JsonCodec)(Role.CLIENT)
        raw = Raw(ws, client_codec)
        try:
            welcome = await raw.recv()
            assert isinstance(welcome, Welcome)
            raw.welcome = welcome
            yield raw
        finally:
            # trio-websocket 0.12 leaves its TCP stream open when the server
            # starts the close; close it so no socket outlives the test.
            await trio.aclose_forcefully(ws._stream)


def open_bus(**settings: Any) -> EventBus:
    """A bus with open rooms and an ``echo`` handler, for tests about routing."""
    settings.setdefault("open_rooms", True)
    bus = EventBus(**settings)

    @bus.on("echo")
    async def echo(sock: Any, data: Any) -> Any:
        return data

    return bus
