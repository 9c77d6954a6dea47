"""The advertised limits over real sockets: message size, rate, rooms, pending
requests, name length, and the welcome that announces them."""

from __future__ import annotations

import json
from typing import Any

import msgpack
import pytest
import trio

from eventbus import Connection, EventBus
from eventbus.protocol import (
    Ack,
    Emit,
    ErrorReply,
    Join,
    JsonCodec,
    Leave,
    MsgpackCodec,
    Publish,
    Role,
    Welcome,
    WelcomeOptions,
)

from .conftest import open_bus, raw_client, serving
from .test_handshake import (
    OP_BINARY,
    OP_CONTINUATION,
    OP_TEXT,
    close_code,
    echo,
    raw_websocket,
)

MAX_FRAME = 1000


def emit_text(size: int, ack_id: int = 1, fill: str = "x") -> str:
    """A JSON EMIT of ``echo`` exactly ``size`` bytes long (UTF-8)."""
    empty = f'[1,"echo","",{ack_id}]'
    count = (size - len(empty.encode())) // len(fill.encode())
    text = f'[1,"echo","{fill * count}",{ack_id}]'
    assert len(text.encode()) == size, "fill does not divide the size"
    return text


# --- message size ------------------------------------------------------------------


async def test_message_of_max_frame_bytes_is_accepted_one_more_closes_1009() -> None:
    with trio.fail_after(10):
        async with serving(open_bus(max_frame=MAX_FRAME)) as port, \
                raw_client(port) as bystander, raw_client(port) as client:
            await client.send_raw(emit_text(MAX_FRAME, 1))
            answer = await client.recv()
            assert isinstance(answer, Ack)
            assert answer.ack_id == 1
            await client.send_raw(emit_text(MAX_FRAME + 1, 2))
            assert await close_code(client) == 1009
            await echo(bystander, 1)
            async with raw_client(port) as newcomer:
                await echo(newcomer, 1)


async def test_binary_message_over_max_frame_closes_1009() -> None:
    codec = MsgpackCodec(Role.CLIENT)
    with trio.fail_after(10):
        async with serving(open_bus(max_frame=MAX_FRAME)) as port, \
                raw_client(port, "msgpack") as client:
            exact = codec.encode(Emit("echo", b"\0" * 989, 1))
            assert len(exact) == MAX_FRAME
            await client.send_raw(exact)
            assert await client.recv() == Ack(1, b"\0" * 989)
            await client.send_raw(codec.encode(Emit("echo", b"\0" * 990, 2)))
            assert await close_code(client) == 1009


async def test_max_frame_counts_utf8_bytes_not_characters() -> None:
    """'é' is two bytes: 600 of them make a 1200-byte message (of 612 characters)."""
    text = emit_text(2 * 600 + len('[1,"echo","",1]'), 1, fill="é")
    assert len(text) <= MAX_FRAME < len(text.encode())
    with trio.fail_after(10):
        async with serving(open_bus(max_frame=MAX_FRAME)) as port, \
                raw_client(port) as client:
            await client.send_raw(text)
            assert await close_code(client) == 1009


@pytest.mark.parametrize(("opcode", "codec"), [(OP_TEXT, "json"), (OP_BINARY, "msgpack")])
async def test_fragmented_message_over_max_frame_closes_1009(opcode: int, codec: str) -> None:
    """Each fragment is small; the reassembled message is not."""
    subprotocol = f"eventbus.v1.{codec}"
    with trio.fail_after(10):
        async with serving(open_bus(max_frame=MAX_FRAME)) as port, \
                raw_client(port) as bystander, \
                raw_websocket(port, subprotocols=[subprotocol]) as ws:
            await ws.read_frame()  # welcome
            await ws.send_frame(opcode, b"x" * 400, fin=False)
            await ws.send_frame(OP_CONTINUATION, b"x" * 400, fin=False)
            await ws.send_frame(OP_CONTINUATION, b"x" * 400, fin=True)
            code, _ = await ws.read_close()
            assert code == 1009
            await ws.expect_eof()
            await echo(bystander, 1)


async def test_fragmented_message_within_max_frame_is_reassembled() -> None:
    text = emit_text(900, 7).encode()
    parts = [text[:1], text[1:450], text[450:899], text[899:]]
    with trio.fail_after(10):
        async with serving(open_bus(max_frame=MAX_FRAME)) as port, raw_websocket(port) as ws:
            await ws.read_frame()  # welcome
            for _ in range(2):  # the fragment buffer starts empty again after a message
                for n, part in enumerate(parts):
                    await ws.send_frame(OP_TEXT if n == 0 else OP_CONTINUATION, part,
                                        fin=n == len(parts) - 1)
                opcode, payload = await ws.read_frame()
                assert opcode == OP_TEXT
                assert json.loads(payload) == [7, 7, "x" * (900 - len('[1,"echo","",7]'))]


async def test_huge_frame_closes_1009_before_it_is_all_sent() -> None:
    """A frame header announcing 10 MB: the server must not wait for (or buffer) it."""
    with trio.fail_after(10):
        async with serving(open_bus(max_frame=MAX_FRAME)) as port, raw_websocket(port) as ws:
            await ws.read_frame()  # welcome
            size = 10 * 1024 * 1024
            header = bytes([0x81, 0x80 | 127]) + size.to_bytes(8, "big") + b"\0\0\0\0"
            await ws.stream.send_all(header + b"x" * 4096)
            code, _ = await ws.read_close()
            assert code == 1009


# --- rate -----------------------------------------------------------------------------------


async def test_rate_limit_answers_the_excess_with_rate_limited_and_their_ack_ids() -> None:
    with trio.fail_after(10):
        async with serving(open_bus(rate=5, burst=5)) as port, raw_client(port) as client, \
                raw_client(port) as other:
            for n in range(1, 21):
                await client.send(Emit("echo", n, n))
            acked, limited = [], []
            for _ in range(20):
                answer = await client.recv()
                if isinstance(answer, Ack):
                    assert answer.data == answer.ack_id
                    acked.append(answer.ack_id)
                else:
                    assert isinstance(answer, ErrorReply)
                    assert answer.code == "rate_limited"
                    limited.append(answer.ack_id)
            assert sorted(acked + limited) == list(range(1, 21))
            assert acked[:5] == [1, 2, 3, 4, 5]  # the burst
            assert len(limited) >= 12  # refill is 5/s: a few ms of sending adds ~nothing
            # A packet without an ack id, and an answer, are refused with ack id null.
            await client.send(Emit("echo", "no id"))
            await client.send_raw("[7,1,null]")
            for _ in range(2):
                answer = await client.recv()
                assert isinstance(answer, ErrorReply)
                assert (answer.ack_id, answer.code) == (None, "rate_limited")
            # The limit is per connection.
            await echo(other, 1)
            # The bucket refills at 5 tokens/s: after 0.3 s there is one.
            await trio.sleep(0.3)
            await echo(client, 100)


async def test_rate_zero_means_unlimited() -> None:
    with trio.fail_after(10):
        async with serving(open_bus(rate=0, burst=0)) as port, raw_client(port) as client:
            assert client.welcome is not None
            assert (client.welcome.options.rate, client.welcome.options.burst) == (0, 0)
            for n in range(1, 301):
                await client.send(Emit("echo", n, n))
            for n in range(1, 301):
                assert await client.recv() == Ack(n, n)


# --- rooms and pending requests ---------------------------------------------------------


async def test_max_rooms() -> None:
    with trio.fail_after(10):
        async with serving(open_bus(max_rooms=2)) as port, raw_client(port) as client:
            for n, room in enumerate(["a", "b"], start=1):
                await client.send(Join(room, n))
                assert isinstance(await client.recv(), Ack)
            await client.send(Join("c", 3))
            answer = await client.recv()
            assert isinstance(answer, ErrorReply)
            assert (answer.ack_id, answer.code) == (3, "too_many_rooms")
            await client.send(Join("a", 4))  # already a member: not a new room
            assert isinstance(await client.recv(), Ack)
            await client.send(Publish("c", "e", None, 5))  # publishing needs no membership
            kept = await client.recv()  # kept in c's history, numbered
            assert isinstance(kept, Ack)
            assert kept.data[1] == 1
            await client.send(Leave("a", 6))
            assert await client.recv() == Ack(6, None)
            await client.send(Join("c", 7))
            assert isinstance(await client.recv(), Ack)


def blocking_bus(**settings: Any) -> tuple[EventBus, trio.Event, trio.Event]:
    bus = open_bus(**settings)
    started, release = trio.Event(), trio.Event()

    @bus.on("block")
    async def block(sock: Connection, data: Any) -> Any:
        started.set()
        await release.wait()
        return data

    return bus, started, release


async def test_max_pending() -> None:
    bus, started, release = blocking_bus(max_pending=2)
    with trio.fail_after(10):
        async with serving(bus) as port, raw_client(port) as client, raw_client(port) as other:
            await client.send(Emit("block", "one", 1))
            await started.wait()
            await client.send(Emit("echo", "two", 2))  # queued behind the first
            await client.send(Emit("echo", "three", 3))
            answer = await client.recv()
            assert isinstance(answer, ErrorReply)
            assert (answer.ack_id, answer.code) == (3, "too_many_pending")
            # A request without an ack id is not pending: it is not refused.
            await client.send(Emit("echo", "no id"))
            await client.recv_nothing(0.1)
            await echo(other, 1)  # another connection has its own count
            release.set()
            assert await client.recv() == Ack(1, "one")
            assert await client.recv() == Ack(2, "two")
            await client.recv_nothing(0.1)  # the refused request was not processed
            await client.send(Emit("echo", "four", 4))
            await client.send(Emit("echo", "five", 5))
            assert await client.recv() == Ack(4, "four")
            assert await client.recv() == Ack(5, "five")


async def test_reused_pending_ack_id_is_refused_with_ack_id_null() -> None:
    bus, started, release = blocking_bus()
    with trio.fail_after(10):
        async with serving(bus) as port, raw_client(port) as client:
            await client.send(Emit("block", "first", 1))
            await started.wait()
            await client.send(Emit("echo", "second", 1))
            answer = await client.recv()
            assert isinstance(answer, ErrorReply)
            assert (answer.ack_id, answer.code) == (None, "invalid_packet")
            assert "1" in answer.message
            release.set()
            assert await client.recv() == Ack(1, "first")
            await client.recv_nothing(0.1)  # the second request was not processed
            await echo(client, 1)  # once answered, the id is free again


# --- names ------------------------------------------------------------------------------


async def test_max_name_is_advertised_and_enforced_in_utf8_bytes() -> None:
    bus = open_bus(max_name=10)

    @bus.on("abcdefghij")
    async def ten(sock: Connection, data: Any) -> Any:
        return "ten"

    with trio.fail_after(10):
        async with serving(bus) as port, raw_client(port) as client:
            assert client.welcome is not None
            assert client.welcome.options.max_name == 10
            await client.send(Emit("abcdefghij", None, 1))
            assert await client.recv() == Ack(1, "ten")
            # The client codec allows 128: the server must refuse what it advertised.
            for n, packet in enumerate([
                Emit("abcdefghijk", None, 2),
                Join("abcdefghijk", 3),
                Join("éééééé", 4),  # 6 characters, 12 bytes
                Publish("room", "abcdefghijk", None, 5),
            ], start=2):
                await client.send(packet)
                answer = await client.recv()
                assert isinstance(answer, ErrorReply)
                assert (answer.ack_id, answer.code) == (n, "invalid_name")
            await client.send(Join("ééééé", 6))  # 10 bytes
            assert isinstance(await client.recv(), Ack)


# --- the welcome ----------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["json", "msgpack"])
async def test_welcome_advertises_every_configured_limit(codec: str) -> None:
    bus = open_bus(ping_interval=12.5, ping_timeout=7.25, max_frame=5000, max_name=20,
                   max_rooms=3, max_pending=4, rate=7, burst=9, max_elements=11)
    expected = {
        "ping_interval": 12500, "ping_timeout": 7250, "max_frame": 5000, "max_name": 20,
        "max_rooms": 3, "max_pending": 4, "rate": 7, "burst": 9, "max_elements": 11,
    }
    with trio.fail_after(10):
        async with serving(bus) as port, raw_websocket(
            port, subprotocols=[f"eventbus.v1.{codec}"]
        ) as ws:
            opcode, payload = await ws.read_frame()
            if codec == "json":
                assert opcode == OP_TEXT
                wire = json.loads(payload)
                welcome = JsonCodec(Role.CLIENT).decode(payload.decode())
            else:
                assert opcode == OP_BINARY
                wire = msgpack.unpackb(payload)
                welcome = MsgpackCodec(Role.CLIENT).decode(payload)
            assert wire[0] == 0
            assert wire[3] == expected
            assert all(type(value) is int for value in wire[3].values())
            assert isinstance(welcome, Welcome)
            assert welcome.options == WelcomeOptions(**expected)


async def test_welcome_defaults_are_the_documented_ones() -> None:
    with trio.fail_after(10):
        async with serving(EventBus()) as port, raw_client(port) as client:
            assert client.welcome is not None
            assert client.welcome.options == WelcomeOptions(
                ping_interval=25000, ping_timeout=20000, max_frame=1048576, max_name=128,
                max_rooms=100, max_pending=64, rate=100, burst=200,
            )
