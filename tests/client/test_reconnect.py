"""Reconnection against a real server on 127.0.0.1 that is stopped and started again
on the same port (trio's listeners set SO_REUSEADDR)."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

import eventbus
from eventbus import Backoff, Connection

from .conftest import make_bus, serving

FAST = Backoff(initial=0.01, cap=0.05)


async def test_subscriber_rejoins_after_restart_and_in_flight_calls_fail_at_once() -> None:
    with trio.fail_after(10):
        async with serving(make_bus()) as server, \
                eventbus.connect(server.url, reconnect=FAST) as client:
            reconnected = trio.Event()
            disconnected = trio.Event()
            lost: list[eventbus.ConnectionClosed] = []

            @client.on_disconnect
            async def on_disconnect(error: eventbus.ConnectionClosed) -> None:
                lost.append(error)
                disconnected.set()

            @client.on_reconnect
            def on_reconnect() -> None:
                reconnected.set()

            async with client.subscribe("news") as events:
                first_sid = client.sid
                outcome: list[BaseException] = []
                failed = trio.Event()

                async def hanging_call() -> None:
                    try:
                        await client.call("never", timeout=30)
                    except eventbus.EventBusError as exc:
                        outcome.append(exc)
                    failed.set()

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(hanging_call)
                    await server.bus.hung.wait()
                    stopped_at = trio.current_time()
                    await server.stop()
                    await failed.wait()
                # At once, not after the call's 30 s timeout.
                assert trio.current_time() - stopped_at < 2
                assert isinstance(outcome[0], eventbus.ConnectionClosed)
                await disconnected.wait()
                assert lost[0].close_code == 1006

                await server.start(make_bus())
                await reconnected.wait()
                assert client.connected
                assert client.sid != first_sid
                assert client.rooms == {"news"}
                assert [c.sid for c in server.bus.members("news")] == [client.sid]
                async with eventbus.connect(server.url) as publisher:
                    position = await publisher.publish("news", "after", {"n": 1})
                event = await events.__anext__()
                assert (event.room, event.event, event.data) == ("news", "after", {"n": 1})
                assert client.positions["news"] == position
                assert client.statistics()["reconnects"] == 1


async def test_operations_wait_for_the_reconnection_up_to_a_bound() -> None:
    with trio.fail_after(10):
        bus = make_bus()
        noted = trio.Event()

        async with serving(bus) as server, eventbus.connect(
            server.url, reconnect=FAST, wait_reconnect=0.3,
        ) as client:
            disconnected = trio.Event()
            client.on_disconnect(lambda error: disconnected.set())
            await server.stop()
            await disconnected.wait()
            assert not client.connected
            assert not client.closed
            # No server: emit waits wait_reconnect (0.3 s), then gives up.
            before = trio.current_time()
            with pytest.raises(eventbus.ConnectionClosed, match="no reconnection within"):
                await client.emit("note", 1)
            assert 0.25 < trio.current_time() - before < 2
            # With the server back while it waits, the emit goes through.
            restarted = make_bus()

            @restarted.on("note")
            async def note(sock: Connection, data: Any) -> None:
                noted.set()

            client.wait_reconnect = 5
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.emit, "note", 2)
                await trio.testing.wait_all_tasks_blocked()
                await server.start(restarted)
            await noted.wait()


async def test_reconnect_off_closes_the_client_for_good() -> None:
    with trio.fail_after(10):
        async with serving(make_bus()) as server, \
                eventbus.connect(server.url, reconnect=False) as client:
            async with client.subscribe("news") as events:
                await server.stop()
                with pytest.raises(eventbus.ConnectionClosed):
                    await events.__anext__()
            assert client.closed
            before = trio.current_time()
            with pytest.raises(eventbus.ConnectionClosed):
                await client.call("echo", 1)
            assert trio.current_time() - before < 1  # at once: nothing to wait for
