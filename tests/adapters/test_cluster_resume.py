"""Resume across nodes: `eventbus serve` processes joined through a real
redis-server. A subscriber cut off from node 1 resumes on node 2 and gets exactly
what it missed, then live messages; the same after node 1 was SIGKILLed; and an old
connection still open on node 1 is closed with 4004 when node 2 takes its session."""

from __future__ import annotations

import signal

import pytest
import trio
import trio_websocket

from eventbus.protocol import Ack, Event, Position, Publish, Resume, RoomEvent
from tests.server.conftest import Raw, raw_client

from .conftest import RedisServer
from .test_cluster import cluster, join


async def cut(client: Raw) -> None:
    await trio.aclose_forcefully(client.ws._stream)


async def publish_many(client: Raw, room: str, count: int) -> None:
    # In windows of 50: the server answers at most max_pending (64) at once.
    for start in range(0, count, 50):
        numbers = range(start, min(count, start + 50))
        for n in numbers:
            await client.send(Publish(room, "n", n, 1 + n))
        for _ in numbers:
            answer = await client.recv(timeout=10)
            assert isinstance(answer, Ack), answer


async def resume(client: Raw, old: Raw, positions: dict[str, Position]) -> tuple[
        list[RoomEvent], dict[str, object]]:
    assert old.welcome is not None
    await client.send(Resume(old.sid, old.welcome.resume_token, positions, 7))
    token = await client.recv(timeout=10)
    assert isinstance(token, Event)
    assert token.event == "$resume_token"
    events: list[RoomEvent] = []
    while True:
        packet = await client.recv(timeout=10)
        if isinstance(packet, RoomEvent):
            events.append(packet)
            continue
        assert isinstance(packet, Ack), packet
        return events, packet.data


async def check_resumed_on_another_node(redis: RedisServer, *, kill_first: bool) -> None:
    with trio.fail_after(60):
        async with cluster(redis, 2) as nodes, raw_client(nodes[1].port) as pub:
            async with raw_client(nodes[0].port, "msgpack") as sub:
                epoch, seq = await join(sub, "news")
                assert seq == 0
                await cut(sub)
            if kill_first:
                nodes[0].stop(signal.SIGKILL)
            await publish_many(pub, "news", 100)
            async with raw_client(nodes[1].port, "msgpack") as again:
                events, verdicts = await resume(again, sub, {"news": Position(epoch, 0)})
                assert [e.data for e in events] == list(range(100))
                assert [e.seq for e in events] == list(range(1, 101))
                assert verdicts == {"news": {"recovered": True, "replayed": 100,
                                             "position": [epoch, 100]}}
                await pub.send(Publish("news", "n", 100, 500))
                assert isinstance(await pub.recv(timeout=10), Ack)
                live = await again.recv(timeout=10)
                assert isinstance(live, RoomEvent)
                assert (live.data, live.seq) == (100, 101)
                await again.recv_nothing(0.3)


async def test_cut_off_from_node_1_resumed_on_node_2(redis_server: RedisServer) -> None:
    await check_resumed_on_another_node(redis_server, kill_first=False)


async def test_resumed_on_node_2_after_node_1_was_sigkilled(redis_server: RedisServer) -> None:
    await check_resumed_on_another_node(redis_server, kill_first=True)


async def test_the_old_connection_on_another_node_is_closed_with_4004(
        redis_server: RedisServer) -> None:
    with trio.fail_after(60):
        async with cluster(redis_server, 2) as nodes, raw_client(nodes[0].port) as old:
            epoch, _ = await join(old, "r")
            async with raw_client(nodes[1].port) as new:
                _, verdicts = await resume(new, old, {"r": Position(epoch, 0)})
                assert verdicts["r"] == {"recovered": True, "replayed": 0,
                                         "position": [epoch, 0]}
                with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                    await old.recv(timeout=10)  # nothing else came to it: the close
                assert closed.value.reason.code == 4004


async def test_except_sender_holds_in_a_replay_on_another_node(redis_server: RedisServer) -> None:
    with trio.fail_after(60):
        async with cluster(redis_server, 2) as nodes, raw_client(nodes[1].port) as other:
            async with raw_client(nodes[0].port) as sub:
                epoch, _ = await join(sub, "chat")
                await sub.send(Publish("chat", "mine", 1, 5))
                assert isinstance(await sub.recv(timeout=10), Ack)
                await cut(sub)
            await publish_many(other, "chat", 3)
            async with raw_client(nodes[1].port) as again:
                events, verdicts = await resume(again, sub, {"chat": Position(epoch, 0)})
                # Its own message (seq 1, published on node 1) is not replayed on node 2.
                assert [(e.event, e.seq) for e in events] == [("n", 2), ("n", 3), ("n", 4)]
                assert verdicts["chat"] == {"recovered": True, "replayed": 3,
                                            "position": [epoch, 4]}
