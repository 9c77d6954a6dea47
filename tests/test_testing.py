"""eventbus.testing: clients connected to a bus in-process, over memory streams.

No sockets and, with ``autojump_clock``, no real time: timeouts, backoff and
heartbeats run instantly. Every test still runs under ``trio.fail_after`` (on the
mock clock, so the guard is in virtual seconds; the wall-clock check is explicit
where it matters).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

import eventbus
import eventbus.testing
from eventbus import Backoff, Connection, EventBus
from eventbus.client import Client, open_client
from eventbus.client.transport import open_websocket_over

FAST = Backoff(initial=0.5, cap=2)


def make_bus(**settings: Any) -> EventBus:
    settings.setdefault("open_rooms", True)
    bus = EventBus(**settings)

    @bus.on("echo")
    async def echo(sock: Connection, data: Any) -> Any:
        return data

    @bus.on("never")
    async def never(sock: Connection, data: Any) -> None:
        await trio.sleep_forever()

    return bus


async def test_connect_in_process_with_headers_and_path() -> None:
    bus = make_bus()
    seen: list[eventbus.HandshakeRequest] = []

    @bus.authenticate
    async def authenticate(request: eventbus.HandshakeRequest) -> None:
        seen.append(request)

    with trio.fail_after(5):
        async with eventbus.testing.connect(
            bus, codec="msgpack", headers={"X-Token": "t"}, path="/bus?v=1",
        ) as client:
            assert client.codec == "msgpack"
            assert await client.call("echo", b"\x00") == b"\x00"
            assert list(bus.connections) == [client.sid]
        assert seen[0].header("x-token") == "t"
        assert seen[0].path == "/bus"
        assert seen[0].query == {"v": "1"}
        assert seen[0].remote is None  # no socket at all


async def test_refused_handshake_in_process() -> None:
    bus = make_bus()

    @bus.authenticate
    async def authenticate(request: eventbus.HandshakeRequest) -> None:
        raise eventbus.HandshakeRejected(403, "go away")

    with trio.fail_after(5), pytest.raises(eventbus.HandshakeRejected) as info:
        async with eventbus.testing.connect(bus):
            pass  # pragma: no cover
    assert (info.value.status, info.value.message) == (403, "go away")


async def test_thirty_second_call_timeout_is_instant_under_autojump(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = make_bus()
    with trio.fail_after(60):
        async with eventbus.testing.connect(bus) as client:
            wall = time.monotonic()
            start = trio.current_time()
            with pytest.raises(eventbus.CallTimeout):
                await client.call("never", timeout=30)
            assert trio.current_time() - start == pytest.approx(30)
            assert time.monotonic() - wall < 1
            # The heartbeat ran meanwhile (ping at 25 s) and kept the connection up.
            assert client.connected


async def test_idle_connection_survives_heartbeats(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = make_bus(ping_interval=1, ping_timeout=1)
    with trio.fail_after(100):
        async with eventbus.testing.connect(bus) as client:
            lost = []
            client.on_disconnect(lost.append)
            await trio.sleep(60)
            assert client.connected
            assert not lost
            assert await client.call("echo", 1) == 1


class Freezable(trio.abc.Stream):
    """A stream that can go silent, as a dead peer behind a live route would: while
    frozen it sends nothing and swallows what it receives."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.frozen = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self.frozen:
            await trio.lowlevel.checkpoint()
            return
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        while True:
            data = await self.inner.receive_some(max_bytes)
            if not self.frozen:
                return data
            if not data:
                await trio.sleep_forever()

    async def aclose(self) -> None:
        await self.inner.aclose()


@asynccontextmanager
async def freezable_client(bus: EventBus) -> AsyncIterator[tuple[Client, list[Freezable]]]:
    """A client whose connections to ``bus`` go through :class:`Freezable` streams."""
    streams: list[Freezable] = []
    async with trio.open_nursery() as nursery:

        async def open_stream() -> trio.abc.Stream:
            client_end, server_end = trio.testing.memory_stream_pair()
            streams.append(Freezable(server_end))
            nursery.start_soon(bus.handle_stream, streams[-1])
            return client_end

        def opener() -> Any:
            return open_websocket_over(open_stream, "test", "/", subprotocols=[], headers=[],
                                       connect_timeout=5, close_timeout=1)

        async with open_client(Client(opener, target="frozen", reconnect=False)) as client:
            yield client, streams
        nursery.cancel_scope.cancel()


async def test_silent_server_is_declared_dead(autojump_clock: trio.testing.MockClock) -> None:
    bus = make_bus(ping_interval=4, ping_timeout=2)
    with trio.fail_after(100):
        async with freezable_client(bus) as (client, streams):
            assert await client.call("echo", 1) == 1
            lost: list[eventbus.ConnectionClosed] = []
            gone = trio.Event()

            @client.on_disconnect
            def on_disconnect(error: eventbus.ConnectionClosed) -> None:
                lost.append(error)
                gone.set()

            frozen_at = trio.current_time()
            streams[0].frozen = True
            await gone.wait()
            # Dead after ping_interval + ping_timeout of silence (plus the close timeout).
            assert 6 <= trio.current_time() - frozen_at <= 8
            assert "silent for 6 s" in str(lost[0])
            assert lost[0].close_code == 1006
            assert client.closed


async def test_reconnects_after_going_away_and_rejoins(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = make_bus()
    with trio.fail_after(60):
        async with eventbus.testing.connect(bus, reconnect=FAST) as client:
            back = trio.Event()
            client.on_reconnect(back.set)
            async with client.subscribe("room") as events:
                old = bus.connections[client.sid or ""]
                old.close(eventbus.CloseCode.GOING_AWAY, "restarting")
                await back.wait()
                assert [c.sid for c in bus.members("room")] == [client.sid]
                bus.emit("hello", 1, to="room")
                assert (await events.__anext__()).data == 1


@pytest.mark.parametrize("code", [4000, 1009])
async def test_client_bug_close_codes_stop_the_client_with_a_warning(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture, code: int,
) -> None:
    # Reconnecting after the client broke the protocol would repeat it in a loop.
    bus = make_bus()
    with trio.fail_after(60):
        async with eventbus.testing.connect(bus, reconnect=FAST) as client:
            with caplog.at_level(logging.WARNING, logger="eventbus.client"):
                async with client.subscribe("room") as events:
                    bus.connections[client.sid or ""].close(code, "you")
                    with pytest.raises(eventbus.ConnectionClosed) as info:
                        await events.__anext__()
            assert info.value.close_code == code
            assert client.closed
            assert client.statistics()["reconnects"] == 0
            assert "not reconnecting" in caplog.text


@pytest.mark.parametrize("code", [4003, 4004, 1000])
async def test_final_close_codes_stop_the_client(
    autojump_clock: trio.testing.MockClock, code: int,
) -> None:
    bus = make_bus()
    with trio.fail_after(60):
        async with eventbus.testing.connect(bus, reconnect=FAST) as client:
            async with client.subscribe("room") as events:
                bus.connections[client.sid or ""].close(code, "no")
                with pytest.raises(eventbus.ConnectionClosed) as info:
                    await events.__anext__()
            assert info.value.close_code == code
            assert client.closed
            with pytest.raises(eventbus.ConnectionClosed):
                await client.emit("echo")
            assert client.statistics()["reconnects"] == 0


async def test_rejected_reconnection_stops_the_client(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = make_bus()
    allowed = [True]

    @bus.authenticate
    async def authenticate(request: eventbus.HandshakeRequest) -> None:
        if not allowed[0]:
            raise eventbus.HandshakeRejected(401, "token expired")

    with trio.fail_after(60):
        async with eventbus.testing.connect(bus, reconnect=FAST) as client:
            async with client.subscribe("room") as events:
                allowed[0] = False
                bus.connections[client.sid or ""].close(eventbus.CloseCode.GOING_AWAY)
                with pytest.raises(eventbus.ConnectionClosed) as info:
                    await events.__anext__()
            cause = info.value.__cause__
            assert isinstance(cause, eventbus.ConnectionClosed)
            assert isinstance(cause.__cause__, eventbus.HandshakeRejected)
            assert cause.__cause__.status == 401


async def test_gives_up_after_max_attempts(autojump_clock: trio.testing.MockClock) -> None:
    bus = make_bus()
    up = [True]

    @bus.authenticate
    async def authenticate(request: eventbus.HandshakeRequest) -> None:
        if not up[0]:
            raise eventbus.HandshakeRejected(503, "busy")

    with trio.fail_after(600):
        backoff = Backoff(initial=1, cap=4, max_attempts=3)
        async with eventbus.testing.connect(bus, reconnect=backoff) as client:
            attempts = []
            client.on_disconnect(attempts.append)
            up[0] = False
            start = trio.current_time()
            async with client.subscribe("room") as events:
                bus.connections[client.sid or ""].close(eventbus.CloseCode.GOING_AWAY)
                with pytest.raises(eventbus.ConnectionClosed, match="gave up after 3 attempts"):
                    await events.__anext__()
            assert trio.current_time() - start <= 1 + 2 + 4 + 1


async def test_gap_is_counted_and_reported(autojump_clock: trio.testing.MockClock) -> None:
    bus = make_bus(send_queue_size=2)
    with trio.fail_after(60):
        async with eventbus.testing.connect(bus) as client:
            gaps: list[tuple[str | None, int]] = []
            got_gap = trio.Event()

            @client.on_gap
            def on_gap(room: str | None, count: int) -> None:
                gaps.append((room, count))
                got_gap.set()

            async with client.subscribe("ticker") as events:
                # Memory streams have no kernel buffer: everything queues in the outbox.
                for i in range(10):
                    bus.emit("tick", i, to="ticker", delivery="volatile")
                await got_gap.wait()
                assert gaps == [("ticker", 8)]
                assert events.missed == 8
                assert client.statistics()["missed"] == 8
                received = [events.receive_nowait().data for _ in range(2)]
                assert received == [0, 1]


async def test_requests_wait_for_a_slot_below_max_pending() -> None:
    bus = make_bus(max_pending=2)
    release = trio.Event()
    running: list[int] = []

    @bus.on("wait", concurrency=8)
    async def wait(sock: Connection, data: int) -> int:
        running.append(data)
        await release.wait()
        return data

    with trio.fail_after(5):
        async with eventbus.testing.connect(bus) as client:
            results: list[int] = []

            async def call(n: int) -> None:
                results.append(await client.call("wait", n))

            async with trio.open_nursery() as nursery:
                for n in range(5):
                    nursery.start_soon(call, n)
                await trio.testing.wait_all_tasks_blocked()
                # Only max_pending requests went out; the server refused none.
                assert len(running) == 2
                assert client.statistics()["pending"] == 2
                release.set()
            assert sorted(results) == [0, 1, 2, 3, 4]


async def test_unencodable_answer_to_a_server_call_becomes_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = make_bus()
    with trio.fail_after(5):
        async with eventbus.testing.connect(bus, codec="json") as client:

            @client.on("photo")
            def photo(data: Any) -> bytes:
                return b"\xff\xd8"  # JSON cannot carry it

            conn = bus.connections[client.sid or ""]
            with caplog.at_level(logging.WARNING, logger="eventbus.client"), \
                    pytest.raises(eventbus.ProtocolError) as info:
                await conn.call("photo", None)
            assert info.value.code == "unencodable"
            assert "cannot be sent" in caplog.text


async def test_server_heartbeat_closes_a_silent_client_under_autojump(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = make_bus(ping_interval=4, ping_timeout=2)
    ended: list[eventbus.Disconnect] = []
    done = trio.Event()

    @bus.on_disconnect
    async def gone(sock: Connection, disconnect: eventbus.Disconnect) -> None:
        ended.append(disconnect)
        done.set()

    started = time.monotonic()
    with trio.fail_after(100):
        async with bus.running(), freezable_client(bus) as (client, streams):
            assert await client.call("echo", 1) == 1
            await trio.sleep(30)  # pings every 4 s, all answered
            assert client.connected
            assert not ended
            frozen_at = trio.current_time()
            streams[0].frozen = True
            await done.wait()
            # The server pings within ping_interval, then waits ping_timeout.
            assert trio.current_time() - frozen_at <= 4 + 2 + 1
            bus.shutdown()
    assert [d.code for d in ended] == [4002]
    assert time.monotonic() - started < 5  # 40 virtual seconds, no real sleeping
