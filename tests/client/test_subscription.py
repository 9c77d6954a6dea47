"""Subscription buffers: bounded, drop the oldest when full, never silently."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio

import eventbus
from eventbus import Incoming, Subscription
from eventbus.protocol import Ack, Join, Leave

from .conftest import Peer, make_bus, scripted, serving


def event(n: int) -> Incoming:
    return Incoming("room", "tick", n, "e", n)


def test_full_buffer_drops_the_oldest_counts_and_warns_once_per_episode(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sub = Subscription(["room"], buffer=3)
    with caplog.at_level(logging.WARNING, logger="eventbus.client"):
        for n in range(1, 8):
            sub._push(event(n))
    assert sub.dropped == 4
    assert [sub.receive_nowait().data for _ in range(3)] == [5, 6, 7]
    assert len(caplog.records) == 1
    assert "dropping the oldest" in caplog.records[0].getMessage()
    with pytest.raises(trio.WouldBlock):
        sub.receive_nowait()
    # The buffer was emptied: the next overflow is a new episode, warned again.
    with caplog.at_level(logging.WARNING, logger="eventbus.client"):
        for n in range(8, 13):
            sub._push(event(n))
    assert sub.dropped == 6
    assert len(caplog.records) == 2
    assert sub.statistics() == {"buffered": 3, "buffer_size": 3, "dropped": 6, "missed": 0}


def test_buffer_must_hold_something() -> None:
    with pytest.raises(ValueError, match="buffer"):
        Subscription(["room"], buffer=0)


async def test_ended_subscription_stops_iteration_and_takes_nothing() -> None:
    sub = Subscription(["room"], buffer=3)
    sub._push(event(1))
    sub._end()
    sub._push(event(2))
    with pytest.raises(StopAsyncIteration):
        await sub.__anext__()


async def test_failed_subscription_delivers_buffered_events_first() -> None:
    sub = Subscription(["room"], buffer=3)
    sub._push(event(1))
    sub._fail(eventbus.ConnectionClosed("gone", close_code=4003))
    assert (await sub.__anext__()).data == 1
    with pytest.raises(eventbus.ConnectionClosed) as info:
        await sub.__anext__()
    assert info.value.close_code == 4003


async def test_slow_subscriber_over_the_network_keeps_the_newest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with trio.fail_after(10):
        async with serving(make_bus()) as server, \
                eventbus.connect(server.url) as pub, eventbus.connect(server.url) as sub:
            last = trio.Event()

            @sub.on("tick")
            def on_tick(data: Any) -> None:  # runs after the subscription got the event
                if data == 9:
                    last.set()

            with caplog.at_level(logging.WARNING, logger="eventbus.client"):
                async with sub.subscribe("ticker", buffer=3) as events:
                    for n in range(10):
                        await pub.publish("ticker", "tick", n)
                    await last.wait()
                    assert events.dropped == 7
                    assert sub.statistics()["dropped"] == 7
                    assert [(await events.__anext__()).data for _ in range(3)] == [7, 8, 9]
            assert "dropping the oldest" in caplog.text


async def test_cancelled_client_with_a_subscription_exits_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Cancelled, the client's reader is cancelled too: waiting for the server's
    # answers (leave ack, close reply) would only run out close_timeout.
    with trio.fail_after(10):
        async with serving(make_bus()) as server:
            bus = server.bus
            started = trio.current_time()
            with trio.move_on_after(0.2):
                async with eventbus.connect(server.url, close_timeout=5) as client, \
                        client.subscribe("a"):
                    await trio.sleep_forever()
            assert trio.current_time() - started < 0.2 + 1
            with trio.fail_after(2):
                while bus.connections:  # noqa: ASYNC110 - the server's side ends soon after
                    await trio.sleep(0.01)
    assert "could not leave" not in caplog.text


async def test_a_subscription_ending_as_the_connection_closes_leaves_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The connection closes while the subscription's LEAVE waits for its answer: the
    # server takes a closed connection out of its rooms, so there is nothing to warn of.
    async def script(peer: Peer) -> None:
        join = await peer.receive()
        assert isinstance(join, Join)
        assert join.ack_id is not None
        await peer.send(Ack(join.ack_id, ["e1", 0]))
        assert isinstance(await peer.receive(), Leave)
        await peer.ws.aclose(code=1001)

    with trio.fail_after(10), caplog.at_level(logging.WARNING, logger="eventbus.client"):
        async with scripted(script) as url, eventbus.connect(url, reconnect=False) as client:
            async with client.subscribe("news"):
                pass
            assert client.rooms == frozenset()
    assert "could not leave" not in caplog.text
