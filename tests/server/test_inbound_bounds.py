"""What one client may cost the server: memory, CPU, log lines, and how it is closed.

Each test here was an abuse probe against a live server: decode amplification,
floods of tiny frames and pings, a burst of bad messages, forged log lines. They
run over real sockets on 127.0.0.1. Tests about the token bucket freeze trio's
clock (``mock_clock``, which never advances by itself), so the bucket never
refills and the counts are exact; they bound themselves with the test timeout,
not with ``fail_after`` (which would never fire on a frozen clock).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
from typing import Any

import msgpack
import pytest
import trio
import trio.lowlevel
import trio.testing

from eventbus import Connection, EventBus
from eventbus.protocol import Ack, Emit, ErrorReply

from .conftest import open_bus, raw_client, serving
from .test_handshake import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    client_frame,
    raw_websocket,
)


def slow_bus(**settings: Any) -> tuple[EventBus, list[Connection]]:
    """A bus whose ``slow`` handler sleeps a long time: its requests pile up."""
    bus = open_bus(**settings)
    seen: list[Connection] = []

    @bus.on("slow")
    async def slow(sock: Connection, data: Any) -> None:
        seen.append(sock)
        await trio.sleep(3600)

    return bus, seen


def empty_arrays_json(count: int, ack_id: int | None = None) -> str:
    tail = "" if ack_id is None else f",{ack_id}"
    return '[1,"slow",[' + ",".join(["[]"] * count) + "]" + tail + "]"


def empty_arrays_msgpack(count: int, ack_id: int | None = None) -> bytes:
    head = b"\x94" if ack_id is not None else b"\x93"
    body = head + b"\x01\xa4slow\xdd" + count.to_bytes(4, "big") + b"\x90" * count
    return body + (msgpack.packb(ack_id) if ack_id is not None else b"")


def rss_bytes() -> int:
    with open(f"/proc/{os.getpid()}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")  # pragma: no cover - Linux always has it


# --- decode amplification ---------------------------------------------------------------


@pytest.mark.parametrize("codec", ["json", "msgpack"])
async def test_a_message_of_too_many_values_is_refused_and_others_go_on(codec: str) -> None:
    bus, seen = slow_bus(rate=0, max_elements=1000)
    with trio.fail_after(20):
        async with serving(bus) as port, raw_client(port, codec) as abuser, \
                raw_client(port) as bystander:
            # 300,000 empty arrays: hundreds of thousands of objects if decoded.
            flood = (empty_arrays_json if codec == "json" else empty_arrays_msgpack)(
                300_000, ack_id=7)
            for _ in range(5):
                await abuser.send_raw(flood)
                answer = await abuser.recv()
                assert isinstance(answer, ErrorReply)
                assert (answer.ack_id, answer.code) == (7, "invalid_packet")
                assert "max_elements" in answer.message
                await bystander.send(Emit("echo", "still here", 1))
                assert await bystander.recv() == Ack(1, "still here")
            assert seen == []  # nothing reached the handler
            # Within the limit is fine.
            await abuser.send(Emit("echo", [[]] * 900, 8))
            assert await abuser.recv() == Ack(8, [[]] * 900)


async def test_a_client_pushing_large_requests_at_a_slow_handler_is_bounded_in_bytes() -> None:
    # msgpack binary payloads of 900 KB, without ack ids, at a handler that sleeps:
    # before the byte bound, up to max_pending + 256 of them waited (290 MB).
    bus, seen = slow_bus(rate=0, receive_rate=0)
    bound = bus.config.inbox_bytes
    message = msgpack.packb([1, "slow", os.urandom(900_000)])
    sent = 150
    with trio.fail_after(30):
        async with serving(bus) as port, raw_client(port, "msgpack") as abuser, \
                raw_client(port) as bystander:
            before = rss_bytes()
            for n in range(sent):
                await abuser.send_raw(message)
                if n % 10 == 0:  # the bystander's round trips keep working
                    await bystander.send(Emit("echo", n, n + 1))
                    assert await bystander.recv() == Ack(n + 1, n)
            refused = 0
            with trio.move_on_after(1):
                while True:
                    answer = await abuser.recv()
                    assert isinstance(answer, ErrorReply)
                    assert (answer.ack_id, answer.code) == (None, "too_many_pending")
                    refused += 1
            sock = bus.connections[abuser.sid]
            waiting = len(sock._inbox or ())
            # One request runs; what waits stays within the documented bound.
            assert len(seen) == 1
            assert refused + waiting + 1 == sent
            assert waiting == bound // (len(message) + 80 + 256)
            assert sock._inbox_bytes <= bound
            # Measured in the process too: 135 MB went through, a few MB stayed.
            assert rss_bytes() - before < 64 * 1024 * 1024


async def test_refusing_a_request_does_not_decode_it() -> None:
    bus, seen = slow_bus(rate=0, inbox_bytes=1)
    calls = 0
    json_codec = bus._json
    decode = json_codec.decode

    def counting(message: str | bytes) -> Any:
        nonlocal calls
        calls += 1
        return decode(message)

    json_codec.decode = counting  # type: ignore[method-assign]
    with trio.fail_after(10):
        async with serving(bus) as port, raw_client(port) as client:
            sock = bus.connections[client.sid]
            await client.send(Emit("slow", None))  # runs
            while not seen:  # noqa: ASYNC110 - polls server state, tests only
                await trio.sleep(0.01)
            await client.send(Emit("slow", None))  # waits: one always fits
            while not sock._inbox:  # noqa: ASYNC110 - polls server state, tests only
                await trio.sleep(0.01)
            await client.send_raw('[1,"slow","' + "x" * 100_000 + '",9]')
            answer = await client.recv()
            assert isinstance(answer, ErrorReply)
            assert (answer.ack_id, answer.code) == (9, "too_many_pending")
            assert calls == 2


async def test_reads_are_paced_to_receive_rate(autojump_clock: trio.testing.MockClock) -> None:
    # Bytes cost CPU (unmasking, UTF-8, parsing) before any packet can be refused:
    # over receive_rate the server stops reading, and TCP slows the client down.
    bus = open_bus(rate=0, receive_rate=1_000_000, max_frame=100_000)
    payload = "x" * 90_000
    async with serving(bus) as port, raw_client(port) as client:
        start = trio.current_time()
        for n in range(1, 21):
            await client.send(Emit("echo", payload, n))
        for _ in range(20):
            assert isinstance(await client.recv(timeout=60), Ack)
        elapsed = trio.current_time() - start
    # 1.8 MB at 1 MB/s, less the burst (max_frame + 64 KiB) taken at once.
    assert elapsed >= (20 * 90_000 - 100_000 - 65_536) / 1_000_000 - 0.1


# --- frames ------------------------------------------------------------------------------


@pytest.mark.parametrize("piece", [b"", b"x"])
async def test_a_message_in_too_many_frames_closes_with_1009(piece: bytes) -> None:
    bus = open_bus(rate=0, max_fragments=100)
    frames = client_frame(OP_TEXT, b"[", fin=False)
    frames += client_frame(OP_CONTINUATION, piece, fin=False) * 200
    with trio.fail_after(10):
        async with serving(bus) as port, raw_websocket(port) as ws:
            await ws.read_welcome()
            await ws.stream.send_all(frames)
            code, reason = await ws.read_close()
            assert code == 1009
            assert "100 frames" in reason


async def test_the_reader_yields_while_parsing_a_read_full_of_tiny_frames() -> None:
    bus = open_bus(rate=0, max_fragments=100_000)
    seen: list[int] = []

    async def watch(sock: Connection) -> None:
        # Runs whenever the reader lets other tasks run: notes how far it got.
        while True:
            await trio.lowlevel.checkpoint()
            seen.append(len(sock._fragments))

    # 10,000 one-byte continuation frames, 7 bytes each, sent in one write.
    frames = client_frame(OP_TEXT, b"[", fin=False)
    frames += client_frame(OP_CONTINUATION, b" ", fin=False) * 10_000
    frames += client_frame(OP_CONTINUATION, b'1,"echo","x",5]')
    with trio.fail_after(20):
        async with serving(bus) as port, raw_websocket(port) as ws:
            await ws.read_welcome()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch, next(iter(bus.connections.values())))
                await ws.stream.send_all(frames)
                opcode, payload = await ws.read_frame()
                nursery.cancel_scope.cancel()
            assert (opcode, json.loads(payload)) == (OP_TEXT, [7, 5, "x"])
    # Without the yields, a whole 64 KiB read (about 9,000 frames) was parsed at
    # once; now the reader lets others run every 64 frames (trio may run the
    # reader twice before the watcher, as it shuffles each batch of tasks).
    steps = [later - earlier for earlier, later in itertools.pairwise(seen) if later > earlier]
    assert steps
    assert max(steps) <= 3 * 64


async def test_pings_over_the_rate_go_unanswered_and_a_flood_closes_with_4000(
    mock_clock: trio.testing.MockClock,
) -> None:
    bus = open_bus(rate=10, burst=5)
    async with serving(bus) as port, raw_websocket(port) as ws:
        await ws.read_welcome()
        await ws.stream.send_all(client_frame(OP_PING, b"p") * 150)
        pongs = 0
        while True:
            opcode, payload = await ws.read_frame()
            if opcode == OP_CLOSE:
                break
            assert (opcode, payload) == (OP_PONG, b"p")
            pongs += 1
        assert pongs == 5  # the burst; the clock is frozen, so nothing refills
        assert int.from_bytes(payload[:2], "big") == 4000
        assert b"refused in a row" in payload


async def test_a_message_costs_a_token_per_hundred_values(
    mock_clock: trio.testing.MockClock,
) -> None:
    bus = open_bus(rate=10, burst=150)
    async with serving(bus) as port, raw_client(port) as client:
        # 1 + 1000 values: 1 + 10 tokens (the frame is the message's only frame).
        await client.send(Emit("echo", list(range(1000)), 1))
        assert isinstance(await client.recv(), Ack)
        answers = []
        for n in range(2, 202):
            await client.send(Emit("echo", n, n))
        for _ in range(200):
            answers.append(await client.recv())
        accepted = [a for a in answers if isinstance(a, Ack)]
        assert len(accepted) == 150 - 11


async def test_a_client_that_ignores_rate_limited_is_closed_with_4000(
    mock_clock: trio.testing.MockClock,
) -> None:
    bus = open_bus(rate=10, burst=5)
    async with serving(bus) as port, raw_websocket(port) as ws:
        await ws.read_welcome()
        await ws.stream.send_all(b"".join(
            client_frame(OP_TEXT, f'[1,"echo",null,{n}]'.encode()) for n in range(1, 301)))
        limited = []
        while True:
            opcode, payload = await ws.read_frame()
            if opcode == OP_CLOSE:
                break
            answer = json.loads(payload)
            if answer[0] == 8:
                assert answer[2] == "rate_limited"
                limited.append(answer[1])
        # 5 accepted (the burst), then 100 refusals, each answered, then the close.
        assert limited == list(range(6, 106))
        assert int.from_bytes(payload[:2], "big") == 4000


# --- closes the server starts -------------------------------------------------------------


async def test_a_burst_of_bad_messages_gets_its_errors_then_4000_not_a_reset() -> None:
    # 200 bad messages in one write: the server closes after 10 while most of them
    # are still unread in its socket. It must not reset the connection, or the
    # client loses the errors and the close code (and would reconnect on 1006).
    bad = client_frame(OP_TEXT, b"not json") * 200
    with trio.fail_after(30):
        async with serving(open_bus(rate=0)) as port:
            for _ in range(20):
                async with raw_websocket(port) as ws:
                    await ws.read_welcome()
                    await ws.stream.send_all(bad)
                    errors = 0
                    while True:
                        opcode, payload = await ws.read_frame()
                        if opcode == OP_CLOSE:
                            break
                        assert json.loads(payload)[2] == "malformed"
                        errors += 1
                    assert errors == 10
                    assert int.from_bytes(payload[:2], "big") == 4000
                    await ws.send_frame(OP_CLOSE, payload[:2])
                    await ws.expect_eof()


async def test_the_server_waits_close_timeout_for_the_clients_close_after_a_violation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = open_bus(rate=0, max_errors=1, close_timeout=5)
    async with serving(bus) as port, raw_websocket(port) as ws:
        await ws.read_welcome()
        await ws.send_frame(OP_BINARY, b"\xc1")  # binary under JSON: an error
        await ws.read_frame()  # the error
        assert (await ws.read_close())[0] == 4000
        start = trio.current_time()
        await ws.expect_eof()  # the server ended its side, and waits for ours
        # It still reads what we send (discarding it) until it gives up on us.
        await ws.send_frame(OP_TEXT, b"ignored")
        with trio.fail_after(10):
            while bus.connections:  # noqa: ASYNC110 - polls server state, tests only
                await trio.sleep(0.1)
        assert 4.9 <= trio.current_time() - start <= 5.5


# --- the log ---------------------------------------------------------------------------------


async def test_client_error_reports_are_quoted_cut_short_and_rate_limited_in_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="eventbus.server")
    forged = "oops\n2026-01-01 00:00:00,000 ERROR eventbus.server: forged" + "x" * 5000
    with trio.fail_after(10):
        async with serving(open_bus(rate=0)) as port, raw_client(port) as client:
            for _ in range(100):
                await client.send(ErrorReply(None, "internal_error", forged))
            await client.send(Emit("echo", 1, 1))
            await client.recv()
    reports = [r for r in caplog.records if "reported an error" in r.getMessage()]
    assert 1 <= len(reports) <= 20
    for record in reports:
        line = record.getMessage()
        assert "\n" not in line
        assert len(line) < 400
        assert "more characters" in line


async def test_reconnecting_does_not_refill_the_log_budget(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Each connection may cause 20 lines; all of them together 100 (then 1 a second).
    caplog.set_level(logging.INFO, logger="eventbus.server")
    with trio.fail_after(20):
        async with serving(open_bus(rate=0)) as port:
            for _ in range(10):
                async with raw_client(port) as client:
                    for _ in range(20):
                        await client.send(ErrorReply(None, "internal_error", "again"))
                    await client.send(Emit("echo", 1, 1))
                    await client.recv()
    reports = [r for r in caplog.records if "reported an error" in r.getMessage()]
    assert 100 <= len(reports) <= 110  # 200 were sent


async def test_reconnecting_after_an_abuse_close_does_not_buy_a_fresh_burst(
    mock_clock: trio.testing.MockClock,
) -> None:
    bus = open_bus(rate=10, burst=200)

    async def pongs_for(pings: int) -> tuple[int, int]:
        async with raw_websocket(port) as ws:
            await ws.read_welcome()
            await ws.stream.send_all(client_frame(OP_PING, b"p") * pings)
            pongs = 0
            while True:
                opcode, payload = await ws.read_frame()
                if opcode == OP_CLOSE:
                    return pongs, int.from_bytes(payload[:2], "big")
                pongs += 1

    async with serving(bus) as port:
        assert await pongs_for(500) == (200, 4000)  # the burst, then refusals, then 4000
        # Back from the same address: 10 pongs, not another 200.
        assert await pongs_for(500) == (10, 4000)
