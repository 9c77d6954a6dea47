"""The client's session against servers that misbehave or say unusual things: a bad
or missing WELCOME, packets it cannot read or does not expect, errors and gaps with
no hook to take them, rooms that cannot be joined again after a reconnect, and the
bound on requests awaiting an answer.

Servers are scripted (:func:`.conftest.scripted`, or :func:`greeted` below when the
WELCOME itself is the point) or real (:func:`.conftest.serving`), on 127.0.0.1 port
0; every test runs under ``trio.fail_after`` and synchronises on events.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio
import trio_websocket

import eventbus
from eventbus import Backoff, CallTimeout, ConnectionClosed, Forbidden, Incoming
from eventbus.protocol import (
    JSON_SUBPROTOCOL,
    Ack,
    Emit,
    ErrorReply,
    Event,
    Gap,
    Join,
    JsonCodec,
    Leave,
    Position,
    Role,
    RoomEvent,
    Welcome,
    WelcomeOptions,
)

from .conftest import Peer, make_bus, scripted, serving

FAST = Backoff(initial=0.01, cap=0.05)
LOGGER = "eventbus.client"


async def hold(peer: Peer) -> None:
    """Answer nothing more; return when the client closes."""
    try:
        while True:
            await peer.receive()
    except trio_websocket.ConnectionClosed:
        return


async def echo_once(peer: Peer) -> None:
    """Answer the client's next request (an EMIT) with its own data."""
    request = await peer.receive()
    assert isinstance(request, Emit)
    assert request.ack_id is not None
    await peer.send(Ack(request.ack_id, request.data))


@asynccontextmanager
async def greeted(
    greet: Callable[[trio_websocket.WebSocketConnection], Awaitable[None]],
    subprotocol: str = JSON_SUBPROTOCOL,
) -> AsyncIterator[str]:
    """A server that accepts with ``subprotocol``, lets ``greet(ws)`` send what it
    likes in place of the WELCOME, then holds the connection. Yields its URL."""

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept(subprotocol=subprotocol)
        await greet(ws)
        try:
            while True:
                await ws.get_message()
        except trio_websocket.ConnectionClosed:
            return

    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(
            trio_websocket.serve_websocket, handler, "127.0.0.1", 0, ssl_context=None))
        yield f"ws://127.0.0.1:{server.port}/"
        nursery.cancel_scope.cancel()


def encoded(packet: Any) -> str:
    return JsonCodec(Role.SERVER).encode(packet).decode()


# --- the welcome -----------------------------------------------------------------------


async def test_an_unreadable_welcome_fails_the_connection() -> None:
    async def greet(ws: trio_websocket.WebSocketConnection) -> None:
        await ws.send_message("[0, not json")

    with trio.fail_after(10):
        async with greeted(greet) as url:
            with pytest.raises(ConnectionClosed, match="sent an invalid welcome"):
                async with eventbus.connect(url, reconnect=False):
                    pytest.fail("connected")


async def test_a_packet_before_the_welcome_fails_the_connection() -> None:
    async def greet(ws: trio_websocket.WebSocketConnection) -> None:
        await ws.send_message(encoded(Event("early", None)))

    with trio.fail_after(10):
        async with greeted(greet) as url:
            with pytest.raises(ConnectionClosed, match="sent Event before its welcome"):
                async with eventbus.connect(url, reconnect=False):
                    pytest.fail("connected")


async def test_no_welcome_within_connect_timeout_fails_the_connection() -> None:
    async def greet(ws: trio_websocket.WebSocketConnection) -> None:
        pass  # accepted, then silent

    with trio.fail_after(10):
        async with greeted(greet) as url:
            with pytest.raises(ConnectionClosed, match=r"no welcome from .* within 0\.2 s"):
                async with eventbus.connect(url, reconnect=False, connect_timeout=0.2):
                    pytest.fail("connected")


async def test_a_subprotocol_the_client_cannot_speak_fails_the_connection() -> None:
    async def greet(ws: trio_websocket.WebSocketConnection) -> None:
        pass

    with trio.fail_after(10):
        async with greeted(greet, subprotocol="chat.v2") as url:
            with pytest.raises(ConnectionClosed, match=r"chose subprotocol 'chat\.v2'"):
                async with eventbus.connect(url, reconnect=False,
                                            subprotocols=[JSON_SUBPROTOCOL, "chat.v2"]):
                    pytest.fail("connected")


async def test_a_welcome_without_pings_turns_the_watchdog_off() -> None:
    async def greet(ws: trio_websocket.WebSocketConnection) -> None:
        options = WelcomeOptions(ping_interval=0, ping_timeout=0, max_pending=0)
        await ws.send_message(encoded(Welcome("quiet1", "t" * 43, options)))

    with trio.fail_after(10):
        async with greeted(greet) as url, eventbus.connect(url) as client:
            assert client.options is not None
            assert client.options.ping_interval == 0
            # Requests need no slot when max_pending is 0; this one is never answered.
            with pytest.raises(CallTimeout):
                await client.call("echo", 1, timeout=0.1)
            assert client.connected


# --- what the reader does not expect ---------------------------------------------------


async def test_unreadable_and_unexpected_packets_are_ignored_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def script(peer: Peer) -> None:
        await peer.ws.send_message("not json")
        await peer.send(Welcome("again", "t" * 43))  # only the first packet may be one
        await peer.send(ErrorReply(999, "internal_error", "no request has this ack id"))
        await echo_once(peer)
        await hold(peer)

    caplog.set_level(logging.WARNING, LOGGER)
    with trio.fail_after(10):
        async with scripted(script) as url, eventbus.connect(url) as client:
            assert await client.call("echo", "still here") == "still here"
            assert client.connected
    messages = [record.getMessage() for record in caplog.records]
    assert any(message.startswith("ignoring an invalid packet from") for message in messages)
    assert any(message.startswith("ignoring an unexpected Welcome from") for message in messages)


async def test_an_error_for_no_request_is_logged_without_an_on_error_hook(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def script(peer: Peer) -> None:
        await peer.send(ErrorReply(None, "forbidden", "you were kicked"))
        await echo_once(peer)
        await hold(peer)

    caplog.set_level(logging.WARNING, LOGGER)
    with trio.fail_after(10):
        async with scripted(script) as url, eventbus.connect(url) as client:
            await client.call("echo", None)  # the error came before this answer
    assert any("reported an error" in record.getMessage() and "you were kicked"
               in record.getMessage() for record in caplog.records)


async def test_a_failing_event_handler_is_logged_and_the_client_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def script(peer: Peer) -> None:
        request = await peer.receive()  # sent once the handler is registered
        assert isinstance(request, Emit)
        assert request.ack_id is not None
        await peer.send(Event("boom", {"n": 1}), Ack(request.ack_id, request.data))
        await hold(peer)

    caplog.set_level(logging.ERROR, LOGGER)
    with trio.fail_after(10):
        async with scripted(script) as url, eventbus.connect(url) as client:

            @client.on("boom")
            def boom(data: Any) -> None:
                raise RuntimeError("handler bug")

            assert await client.call("echo", 2) == 2
    [record] = [r for r in caplog.records if r.getMessage() == "handler for event 'boom' failed"]
    assert record.exc_info is not None
    assert str(record.exc_info[1]) == "handler bug"


async def test_gaps_and_events_of_other_rooms_leave_a_subscription_alone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def script(peer: Peer) -> None:
        join = await peer.receive()
        assert isinstance(join, Join)
        assert join.ack_id is not None
        await peer.send(
            Ack(join.ack_id, ["e1", 0]),
            RoomEvent("elsewhere", "chat", "not for this subscription", "e9", 1),
            Gap(None, 3),  # direct events dropped: no room's subscription counts them
            RoomEvent("news", "headline", "for it", "e1", 1),
        )
        leave = await peer.receive()  # leaving the subscription
        assert isinstance(leave, Leave)
        assert leave.ack_id is not None
        await peer.send(Ack(leave.ack_id, None))
        await hold(peer)

    caplog.set_level(logging.WARNING, LOGGER)
    with trio.fail_after(10):
        async with scripted(script) as url, eventbus.connect(url) as client, \
                client.subscribe("news") as events:
            event = await anext(events)
            assert event == Incoming("news", "headline", "for it", "e1", 1)
            assert events.missed == 0
            assert client.statistics()["missed"] == 3
    assert any(record.getMessage().endswith("dropped 3 messages for this client "
                                            "(direct events)") for record in caplog.records)


def test_a_room_event_has_a_position_and_a_direct_event_none() -> None:
    assert Incoming("news", "headline", None, "e1", 3).position == Position("e1", 3)
    assert Incoming(None, "ping", None).position is None


# --- rejoining after a reconnect --------------------------------------------------------


async def test_a_room_refused_after_a_reconnect_is_dropped_and_reported() -> None:
    async def script(peer: Peer) -> None:
        join = await peer.receive()
        assert isinstance(join, Join)
        assert join.ack_id is not None
        if peer.number == 1:
            await peer.send(Ack(join.ack_id, ["e1", 0]))
            await peer.receive()  # the client's "restart" emit
            await peer.ws.aclose(code=1001)
            return
        await peer.send(ErrorReply(join.ack_id, "forbidden", "not any more"))
        await hold(peer)

    with trio.fail_after(10):
        async with scripted(script) as url, eventbus.connect(url, reconnect=FAST) as client:
            reported: list[Exception] = []
            reconnected = trio.Event()
            client.on_error(reported.append)
            client.on_reconnect(reconnected.set)
            await client.join("lobby")
            await client.emit("restart")
            await reconnected.wait()
            assert client.rooms == frozenset()
            assert client.positions == {}
            [error] = reported
            assert isinstance(error, Forbidden)
            assert "not any more" in str(error)


async def test_a_room_not_rejoined_in_time_is_kept_for_the_next_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def script(peer: Peer) -> None:
        join = await peer.receive()
        assert isinstance(join, Join)
        assert join.ack_id is not None
        if peer.number == 1:
            await peer.send(Ack(join.ack_id, ["e1", 0]))
            await peer.receive()
            await peer.ws.aclose(code=1001)
            return
        await hold(peer)  # the second connection never answers the JOIN

    caplog.set_level(logging.WARNING, LOGGER)
    with trio.fail_after(10):
        async with scripted(script) as url, \
                eventbus.connect(url, reconnect=FAST, request_timeout=0.2) as client:
            reconnected = trio.Event()
            client.on_reconnect(reconnected.set)
            await client.join("lobby")
            await client.emit("restart")
            await reconnected.wait()
            assert client.rooms == {"lobby"}
    assert any(record.getMessage().startswith("could not join 'lobby' again")
               for record in caplog.records)


# --- the bound on pending requests ------------------------------------------------------


async def test_a_request_waiting_for_a_slot_times_out_naming_max_pending() -> None:
    bus = make_bus(max_pending=1)
    with trio.fail_after(10):
        async with serving(bus) as server, eventbus.connect(server.url) as client:
            assert client.options is not None
            assert client.options.max_pending == 1
            async with trio.open_nursery() as nursery:
                nursery.start_soon(partial(client.call, "never", timeout=30))
                await bus.hung.wait()
                with pytest.raises(CallTimeout, match="the server's max_pending"):
                    await client.call("echo", 1, timeout=0.2)
                nursery.cancel_scope.cancel()
