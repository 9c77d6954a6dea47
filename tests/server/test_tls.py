"""wss:// with a self-signed certificate (trustme): under TLS the server cannot write
frames straight to the socket, so everything goes through the writer task."""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio
import trio_websocket
import trustme

from eventbus import EventBus
from eventbus.protocol import (
    Ack,
    Emit,
    ErrorReply,
    Event,
    Join,
    JsonCodec,
    MsgpackCodec,
    Publish,
    Role,
    RoomEvent,
    Welcome,
)

from .conftest import SUBPROTOCOLS, Raw, open_bus
from .test_handshake import close_code, echo


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context


@pytest.fixture(scope="module")
def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@asynccontextmanager
async def serving_tls(bus: EventBus, context: ssl.SSLContext) -> AsyncIterator[int]:
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(bus.serve, "127.0.0.1", 0, ssl_context=context))
        yield listeners[0].transport_listener.socket.getsockname()[1]
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def tls_client(
    port: int, context: ssl.SSLContext, codec: str = "json"
) -> AsyncIterator[Raw]:
    ws: trio_websocket.WebSocketConnection | None = None
    try:
        async with trio_websocket.open_websocket_url(
            f"wss://127.0.0.1:{port}/", ssl_context=context,
            subprotocols=[SUBPROTOCOLS[codec]],
        ) as ws:
            raw = Raw(ws, (MsgpackCodec if codec == "msgpack" else JsonCodec)(Role.CLIENT))
            welcome = await raw.recv()
            assert isinstance(welcome, Welcome)
            raw.welcome = welcome
            yield raw
    finally:
        # trio-websocket leaves its stream open after a close the server started.
        if ws is not None:
            await trio.aclose_forcefully(ws._stream)


async def test_wss_echo_with_ack(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    with trio.fail_after(10):
        async with serving_tls(open_bus(), server_context) as port, \
                tls_client(port, client_context) as client:
            assert client.ws.local.is_ssl  # type: ignore[union-attr]
            await echo(client, 1, {"over": "tls"})
            # Big enough to need several writes: the writer task must finish it.
            big = "x" * 600_000
            await client.send(Emit("echo", big, 2))
            assert await client.recv() == Ack(2, big)
            # Many answers in a row keep their order.
            for n in range(3, 103):
                await client.send(Emit("echo", n, n))
            for n in range(3, 103):
                assert await client.recv() == Ack(n, n)


async def test_wss_rooms_and_server_events(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    bus = open_bus()
    with trio.fail_after(10):
        async with serving_tls(bus, server_context) as port, \
                tls_client(port, client_context) as a, \
                tls_client(port, client_context, "msgpack") as b, \
                tls_client(port, client_context) as c:
            for client in (a, b, c):
                await client.send(Join("lobby", 1))
                assert isinstance(await client.recv(), Ack)
            await a.send(Publish("lobby", "chat", {"text": "hi"}, 2))
            ack = await a.recv()
            assert isinstance(ack, Ack)
            epoch, seq = ack.data
            for member in (b, c):
                assert await member.recv() == RoomEvent("lobby", "chat", {"text": "hi"},
                                                        epoch, seq)
            # Delivery started by the server, to a room and to everyone.
            assert bus.emit("tick", 1, to="lobby") == 3
            assert bus.emit("$notice", "hello") == 3
            for client in (a, b, c):
                event = await client.recv()
                assert isinstance(event, RoomEvent)
                assert (event.event, event.data, event.seq) == ("tick", 1, seq + 1)
                assert await client.recv() == Event("$notice", "hello")
            await a.recv_nothing(0.05)


async def test_wss_health_check(server_context: ssl.SSLContext,
                                client_context: ssl.SSLContext) -> None:
    with trio.fail_after(10):
        async with serving_tls(open_bus(), server_context) as port:
            stream = await trio.open_ssl_over_tcp_stream(
                "127.0.0.1", port, ssl_context=client_context, https_compatible=True)
            async with stream:
                await stream.send_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                answer = b""
                while chunk := await stream.receive_some(65536):
                    answer += chunk
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            assert json.loads(body) == {"status": "ok", "connections": 0, "adapter": "connected"}


async def test_wss_close_by_the_application_reaches_the_client(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    bus = open_bus()
    with trio.fail_after(10):
        async with serving_tls(bus, server_context) as port, \
                tls_client(port, client_context) as client:
            bus.connections[client.sid].close(4003, "revoked")
            assert await close_code(client) == 4003


async def test_wss_oversized_message_closes_1009(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    """The close code reaches a TLS client too, not just a TCP drop (1006)."""
    with trio.fail_after(10):
        async with serving_tls(open_bus(max_frame=1000), server_context) as port, \
                tls_client(port, client_context) as client:
            await client.send(Emit("echo", "x" * 2000, 1))
            assert await close_code(client) == 1009


async def test_wss_too_many_errors_closes_4000(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    with trio.fail_after(10):
        async with serving_tls(open_bus(max_errors=2), server_context) as port, \
                tls_client(port, client_context) as client:
            for _ in range(2):
                await client.send_raw("[]")
            for _ in range(2):
                answer = await client.recv()
                assert isinstance(answer, ErrorReply)
            assert await close_code(client) == 4000
