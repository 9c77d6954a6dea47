"""Abuse and edge cases found in review, each over real sockets on 127.0.0.1."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from eventbus import Connection, Disconnect, EventBus
from eventbus.protocol import Ack, Emit, ErrorReply, Event

from .conftest import open_bus, raw_client, serving
from .test_delivery import StalledClient
from .test_handshake import (
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_TEXT,
    client_frame,
    echo,
    raw_websocket,
)
from .test_limits import blocking_bus


@pytest.mark.parametrize(("rate", "code"), [(0, 4001), (100, 4000)])
async def test_a_client_that_pings_and_never_reads_is_closed_not_queued_forever(
    rate: int, code: int,
) -> None:
    # Unmetered, its pongs fill its queue (4001); metered, its pings over the rate
    # go unanswered and it is closed for ignoring the refusals (4000).
    bus = open_bus(send_queue_size=64, send_queue_bytes=64 * 1024, rate=rate)
    ended: list[Disconnect] = []
    done = trio.Event()

    @bus.on_disconnect
    async def gone(sock: Connection, disconnect: Disconnect) -> None:
        ended.append(disconnect)
        done.set()

    pings = client_frame(OP_PING, b"p" * 125) * 100
    with trio.fail_after(20):
        async with serving(bus) as port, raw_client(port) as bystander, \
                StalledClient.connect(port) as stalled:
            with trio.move_on_after(15):
                while not done.is_set():
                    try:
                        await stalled.sock.send(pings)
                    except OSError:
                        break
            await done.wait()
            assert [d.code for d in ended] == [code]
            await echo(bystander, 1)


async def test_a_ping_after_the_server_closed_does_not_crash_the_connection() -> None:
    bus = open_bus()
    with trio.fail_after(10):
        async with serving(bus) as port, raw_websocket(port) as ws:
            await ws.read_frame()  # welcome
            sock = next(iter(bus.connections.values()))
            sock.close(1000, "bye")
            await ws.send_frame(OP_PING, b"late")
            assert await ws.read_close() == (1000, "bye")
            await ws.send_frame(OP_CLOSE, (1000).to_bytes(2, "big"))
            await ws.expect_eof()


async def test_max_frame_counts_bytes_across_fragments() -> None:
    # Each fragment is under a quarter of max_frame in characters, but 4-byte
    # characters make the whole message 4x larger in bytes.
    emoji = "\U0001f600" * 200  # 200 characters, 800 bytes
    with trio.fail_after(10):
        async with serving(open_bus(max_frame=1000)) as port, raw_websocket(port) as ws:
            await ws.read_frame()
            await ws.send_frame(OP_TEXT, emoji.encode(), fin=False)
            await ws.send_frame(OP_CONTINUATION, emoji.encode(), fin=True)
            code, _ = await ws.read_close()
            assert code == 1009


async def test_concurrent_handler_takes_maps_and_repeated_identical_events() -> None:
    bus = EventBus()
    seen: list[Any] = []

    @bus.on("work", concurrency=2)
    async def work(sock: Connection, data: Any) -> Any:
        await trio.sleep(0.01)
        seen.append(data)
        return data

    with trio.fail_after(10):
        async with serving(bus) as port, raw_client(port) as c:
            await c.send(Emit("work", {"same": [1]}))
            await c.send(Emit("work", {"same": [1]}))
            await c.send(Emit("work", {"x": 1}, 1))
            assert await c.recv() == Ack(1, {"x": 1})
            with trio.fail_after(2):
                while len(seen) < 3:  # noqa: ASYNC110 - the two without acks finish too
                    await trio.sleep(0.01)


async def test_on_connect_may_call_the_client() -> None:
    bus = open_bus()
    answers: list[Any] = []

    @bus.on_connect
    async def hello(sock: Connection) -> None:
        answers.append(await sock.call("who?", None, timeout=5))

    with trio.fail_after(10):
        async with serving(bus) as port, raw_client(port) as c:
            request = await c.recv()
            assert isinstance(request, Event)
            assert request.ack_id is not None
            await c.send(Emit("echo", "early", 1))  # sent before answering: waits
            await c.send(Ack(request.ack_id, "me"))
            assert await c.recv() == Ack(1, "early")
            assert answers == ["me"]


async def test_a_full_inbox_refuses_requests_but_still_reads_answers() -> None:
    bus, _started, release = blocking_bus(max_pending=4, rate=0)
    got: list[Any] = []

    @bus.on("ask")
    async def ask(sock: Connection, data: Any) -> Any:
        got.append(await sock.call("q", None, timeout=5))
        return "asked"

    with trio.fail_after(10):
        async with serving(bus) as port, raw_client(port) as c:
            await c.send(Emit("ask", None, 1))
            request = await c.recv()
            assert isinstance(request, Event)
            assert request.ack_id is not None
            # Flood the handlers while they wait for our answer.
            limit = 4 + 256
            for _ in range(limit + 5):
                await c.send(Emit("echo", "flood"))
            await c.send(Ack(request.ack_id, "answer"))
            refused = 0
            while True:
                packet = await c.recv()
                if isinstance(packet, ErrorReply):
                    assert (packet.ack_id, packet.code) == (None, "too_many_pending")
                    refused += 1
                elif packet == Ack(1, "asked"):
                    break
            assert got == ["answer"]
            assert refused >= 5
            release.set()
