"""Acknowledgments in both directions, handler errors and payload validation."""

from __future__ import annotations

import json
import logging
from typing import Any

import attrs
import pytest
import trio

import eventbus
from eventbus import Connection
from eventbus.protocol import Ack, Emit, ErrorReply, Event, Join, Publish

from .conftest import open_bus, raw_client, serving
from .test_handshake import client_frame, raw_websocket


@attrs.frozen
class Move:
    x: int
    y: int


@attrs.frozen
class Moved:
    ok: bool
    where: list[int]


def make_bus() -> eventbus.EventBus:
    bus = open_bus()

    @bus.on("fail")
    async def fail(sock: Connection, data: Any) -> None:
        raise eventbus.Forbidden("members only")

    @bus.on("crash")
    async def crash(sock: Connection, data: Any) -> None:
        raise RuntimeError("database password is hunter2")

    @bus.on("move")
    async def move(sock: Connection, data: Move) -> Moved:
        return Moved(True, [data.x, data.y])

    return bus


async def test_client_requests_answered_with_value_code_internal_and_unknown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with trio.fail_after(10):
        async with serving(make_bus()) as port, raw_client(port) as c:
            await c.send(Emit("echo", {"deep": [1, {"x": None}]}, 1))
            assert await c.recv() == Ack(1, {"deep": [1, {"x": None}]})
            await c.send(Emit("fail", None, 2))
            assert await c.recv() == ErrorReply(2, "forbidden", "members only")
            with caplog.at_level(logging.ERROR, logger="eventbus.server"):
                await c.send(Emit("crash", None, 3))
                crashed = await c.recv()
            assert crashed == ErrorReply(3, "internal_error", "internal error")
            assert "hunter2" not in repr(crashed)
            assert "hunter2" in caplog.text  # the full traceback went to the log
            assert "Traceback" in caplog.text
            await c.send(Emit("nope", None, 4))
            assert await c.recv() == ErrorReply(4, "unknown_event", "no handler for event 'nope'")
            # Without an ack id the error still arrives, with ack id null.
            await c.send(Emit("nope", None))
            assert await c.recv() == ErrorReply(None, "unknown_event",
                                                "no handler for event 'nope'")


async def test_attrs_payload_is_structured_and_validated() -> None:
    with trio.fail_after(10):
        async with serving(make_bus()) as port, raw_client(port) as c:
            await c.send(Emit("move", {"x": 1, "y": 2}, 1))
            assert await c.recv() == Ack(1, {"ok": True, "where": [1, 2]})
            await c.send(Emit("move", {"x": 1, "y": "north"}, 2))
            bad = await c.recv()
            assert isinstance(bad, ErrorReply)
            assert (bad.ack_id, bad.code) == (2, "invalid_payload")
            assert "$.y" in bad.message
            await c.send(Emit("move", {"x": 1}, 3))
            missing = await c.recv()
            assert isinstance(missing, ErrorReply)
            assert missing.code == "invalid_payload"
            assert "$.y" in missing.message


async def test_catch_all_handler_gets_unknown_events() -> None:
    bus = open_bus()

    @bus.on_unknown
    async def anything(sock: Connection, event: str, data: Any) -> Any:
        return [event, data]

    with trio.fail_after(10):
        async with serving(bus) as port, raw_client(port) as c:
            await c.send(Emit("whatever", 7, 1))
            assert await c.recv() == Ack(1, ["whatever", 7])


async def test_server_call_answered_error_and_timeout() -> None:
    bus = open_bus()
    with trio.fail_after(10):
        async with serving(bus) as port, raw_client(port) as c:
            sock = bus.connections[c.sid]
            async with trio.open_nursery() as nursery:
                results: list[Any] = []

                async def ask() -> None:
                    results.append(await sock.call("question", {"q": 1}, timeout=5))

                nursery.start_soon(ask)
                request = await c.recv()
                assert isinstance(request, Event)
                assert (request.event, request.data) == ("question", {"q": 1})
                assert request.ack_id is not None
                await c.send(Ack(request.ack_id, "answer"))
            assert results == ["answer"]

            async with trio.open_nursery() as nursery:
                async def ask_refused() -> None:
                    with pytest.raises(eventbus.Forbidden, match="no way"):
                        await sock.call("question", None, timeout=5)

                nursery.start_soon(ask_refused)
                request = await c.recv()
                assert isinstance(request, Event)
                assert request.ack_id is not None
                await c.send(ErrorReply(request.ack_id, "forbidden", "no way"))

            with pytest.raises(eventbus.CallTimeout):
                await sock.call("question", None, timeout=0.2)
            late = await c.recv()
            assert isinstance(late, Event)
            assert late.ack_id is not None
            # A late answer is ignored, and the connection keeps working.
            await c.send(Ack(late.ack_id, "too late"))
            await c.send(Emit("echo", 1, 9))
            assert await c.recv() == Ack(9, 1)


async def test_server_call_fails_at_once_when_the_client_disconnects() -> None:
    bus = open_bus()
    with trio.fail_after(10):
        async with serving(bus) as port:
            async with raw_client(port) as c:
                sock = bus.connections[c.sid]
                outcome: list[BaseException] = []

                async def ask() -> None:
                    try:
                        await sock.call("question", None, timeout=60)
                    except eventbus.ConnectionClosed as exc:
                        outcome.append(exc)

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(ask)
                    assert isinstance(await c.recv(), Event)
                    started = trio.current_time()
                    await c.ws.aclose()
            assert len(outcome) == 1
            assert trio.current_time() - started < 5  # not the 60 s timeout


async def test_bus_call_to_a_room_collects_answers_and_timeouts() -> None:
    bus = open_bus()
    with trio.fail_after(10):
        async with serving(bus) as port, raw_client(port) as good, raw_client(port) as silent:
            for client in (good, silent):
                client_sock = bus.connections[client.sid]
                client_sock.join("players")

            async def answer_one() -> None:
                request = await good.recv()
                assert isinstance(request, Event)
                assert request.ack_id is not None
                await good.send(Ack(request.ack_id, {"ready": True}))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(answer_one)
                results = await bus.call("ready?", None, to="players", timeout=0.5)
            assert results.answers == {good.sid: {"ready": True}}
            assert results.timed_out == [silent.sid]
            assert results.errors == {}
            assert isinstance(await silent.recv(), Event)  # it was asked, and never answered


async def test_concurrent_handler_runs_in_parallel_up_to_its_bound() -> None:
    bus = open_bus()
    running = 0
    peak = 0

    @bus.on("slow", concurrency=3)
    async def slow(sock: Connection, data: Any) -> Any:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await trio.sleep(0.05)
        running -= 1
        return data

    with trio.fail_after(10):
        async with serving(bus) as port, raw_client(port) as c:
            for n in range(9):
                await c.send(Emit("slow", n, n + 1))
            answers = {(await c.recv()).ack_id for _ in range(9)}  # type: ignore[union-attr]
            assert answers == set(range(1, 10))
            assert peak == 3


async def test_requests_in_one_tcp_write_are_all_answered() -> None:
    # Several packets in one segment reach the reader before the worker task that
    # handles them has started: none may be lost, nor crash the connection.
    frames = b"".join(
        client_frame(0x1, f'[1,"echo",{n},{n + 1}]'.encode()) for n in range(5))
    with trio.fail_after(10):
        async with serving(open_bus()) as port, raw_websocket(port) as ws:
            await ws.read_welcome()
            await ws.stream.send_all(frames)
            for n in range(5):
                opcode, payload = await ws.read_frame()
                assert (opcode, json.loads(payload)) == (0x1, [7, n + 1, n])


async def test_plain_function_handlers_and_hooks_run_in_order_with_async_ones() -> None:
    bus = eventbus.EventBus()
    log: list[str] = []

    @bus.on("slow")
    async def slow(sock: Connection, data: Any) -> str:
        await trio.sleep(0.05)
        log.append(f"slow {data}")
        return "slow"

    @bus.on("quick")
    def quick(sock: Connection, data: Move) -> Moved:
        log.append(f"quick {data.x}")
        return Moved(True, [data.x, data.y])

    @bus.authorize_join
    def may_join(sock: Connection, room: str) -> bool:
        log.append(f"join {room}")
        return room != "secret"

    async def allowed(room: str) -> bool:
        await trio.lowlevel.checkpoint()
        return room == "r"

    @bus.authorize_publish
    def wrapped_hook(sock: Connection, room: str, event: str) -> Any:
        return allowed(room)  # a plain function returning an awaitable: a wrapper

    with trio.fail_after(10):
        async with serving(bus) as port, raw_client(port) as c:
            await c.send(Emit("quick", {"x": 1, "y": 2}, 1))
            assert await c.recv() == Ack(1, {"ok": True, "where": [1, 2]})
            # While the async handler runs, the plain one waits its turn.
            await c.send(Emit("slow", 1, 2))
            await c.send(Emit("quick", {"x": 3, "y": 4}, 3))
            await c.send(Join("r", 4))
            await c.send(Join("secret", 5))
            assert await c.recv() == Ack(2, "slow")
            assert await c.recv() == Ack(3, {"ok": True, "where": [3, 4]})
            assert await c.recv() == Ack(4, [bus.position("r").epoch, 0])  # type: ignore[union-attr]
            refused = await c.recv()
            assert isinstance(refused, ErrorReply)
            assert (refused.ack_id, refused.code) == (5, "forbidden")
            assert log == ["quick 1", "slow 1", "quick 3", "join r", "join secret"]
            await c.send(Emit("quick", {"x": "no"}, 6))
            invalid = await c.recv()
            assert isinstance(invalid, ErrorReply)
            assert invalid.code == "invalid_payload"
            # The wrapper's awaitable is awaited: its verdict counts, in order.
            await c.send(Publish("r", "x", None, 7))
            await c.send(Publish("elsewhere", "x", None, 8))
            assert await c.recv() == Ack(7, [bus.position("r").epoch, 1])  # type: ignore[union-attr]
            refused = await c.recv()
            assert isinstance(refused, ErrorReply)
            assert (refused.ack_id, refused.code) == (8, "forbidden")
