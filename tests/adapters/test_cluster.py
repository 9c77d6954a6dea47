"""One bus as three `eventbus serve` processes on three ports, joined through a
real redis-server: what works on one node works across them, and faults (a node
killed with SIGKILL, Redis restarted mid-traffic) are survived as documented.

The nodes serve tests/adapters/cluster_app.py, whose handlers let a client drive
the bus's cross-node API (calls, members, events to a sid) from inside a node.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import trio
import trio_websocket

from eventbus.protocol import Ack, Emit, Event, Join, Publish, RoomEvent
from tests.server.conftest import Raw, raw_client
from tests.server.test_handshake import http_get

from .conftest import RedisServer, _free_port

ROOT = Path(__file__).resolve().parents[2]


async def wait_serving(port: int, process: subprocess.Popen[bytes]) -> None:
    """Wait until the process answers /health on ``port`` (it must not end first)."""
    with trio.fail_after(20):
        while True:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            try:
                status, _, _ = await http_get(port, "/health")
            except OSError:
                status = 0
            if status == 200:
                return
            await trio.sleep(0.05)


class Node:
    """One `eventbus serve` process."""

    def __init__(self, redis: RedisServer, prefix: str) -> None:
        self.port = _free_port()
        env = {**os.environ, "EVENTBUS_TEST_REDIS": redis.url, "EVENTBUS_TEST_PREFIX": prefix}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "eventbus", "serve", "tests.adapters.cluster_app:bus",
             "--port", str(self.port), "--log-level", "warning"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    async def wait_serving(self) -> None:
        await wait_serving(self.port, self.process)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:  # pragma: no cover - a hung node
            self.process.kill()
            self.process.wait(5)
        assert self.process.stderr is not None
        self.process.stderr.close()


@contextmanager
def started(redis: RedisServer, count: int) -> Iterator[list[Node]]:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    nodes = [Node(redis, prefix) for _ in range(count)]
    try:
        yield nodes
    finally:
        for node in nodes:
            node.stop()


@asynccontextmanager
async def cluster(redis: RedisServer, count: int = 3) -> AsyncIterator[list[Node]]:
    with started(redis, count) as nodes:
        for node in nodes:
            await node.wait_serving()
        yield nodes


async def request(client: Raw, event: str, data: Any, ack_id: int) -> Any:
    await client.send(Emit(event, data, ack_id))
    while True:
        answer = await client.recv(timeout=15)
        if isinstance(answer, Ack) and answer.ack_id == ack_id:
            return answer.data
        assert not isinstance(answer, Ack), answer


async def join(client: Raw, room: str, ack_id: int = 900) -> list[Any]:
    await client.send(Join(room, ack_id))
    answer = await client.recv(timeout=10)
    assert isinstance(answer, Ack)
    return list(answer.data)


async def test_three_nodes_share_a_room(redis_server: RedisServer) -> None:
    with trio.fail_after(60):
        async with cluster(redis_server) as nodes, \
                raw_client(nodes[0].port) as a, raw_client(nodes[1].port, "msgpack") as b, \
                raw_client(nodes[2].port) as c, raw_client(nodes[2].port, "msgpack") as d:
            node_ids = [await request(client, "node", None, 1) for client in (a, b, c)]
            assert len(set(node_ids)) == 3
            positions = [await join(client, "lobby") for client in (a, b, c, d)]
            assert len({epoch for epoch, _ in positions}) == 1, "one authoritative epoch"
            # A publish from node 0 reaches every other member on every node once,
            # in order, at identical dense positions; the sender never.
            for n in range(10):
                await a.send(Publish("lobby", "say", {"n": n}, 100 + n))
            acks = [await a.recv(timeout=10) for _ in range(10)]
            assert all(isinstance(ack, Ack) for ack in acks)
            seen = {}
            for client in (b, c, d):
                events = [await client.recv(timeout=10) for _ in range(10)]
                assert all(isinstance(e, RoomEvent) for e in events)
                seen[client.sid] = [(e.data["n"], e.epoch, e.seq) for e in events]  # type: ignore[union-attr]
                await client.recv_nothing(0.3)  # exactly once
            assert len({tuple(v) for v in seen.values()}) == 1
            seqs = [seq for _, _, seq in seen[b.sid]]
            assert seqs == list(range(seqs[0], seqs[0] + 10)), "dense"
            assert [n for n, _, _ in seen[b.sid]] == list(range(10)), "in order"
            assert [list(ack.data) for ack in acks] == [  # type: ignore[union-attr]
                [epoch, seq] for _, epoch, seq in seen[b.sid]]
            await a.recv_nothing(0.3)
            # Members across nodes.
            members = await request(a, "members", "lobby", 2)
            assert sorted(sid for sid, _ in members) == sorted(x.sid for x in (a, b, c, d))
            assert {node for _, node in members} == set(node_ids)
            # An event to a sid on another node.
            assert await request(a, "tell", {"sid": d.sid, "event": "psst", "data": 1}, 3) == 1
            assert await d.recv(timeout=10) == Event("psst", 1)


async def answer_calls(client: Raw, reply: Any) -> None:
    """Answer every call until the connection ends (its node may be killed)."""
    with contextlib.suppress(trio_websocket.ConnectionClosed):
        while True:
            packet = await client.recv(timeout=30)
            if isinstance(packet, Event) and packet.ack_id is not None:
                await client.send(Ack(packet.ack_id, reply))


async def test_a_call_collects_answers_from_every_node_and_names_a_killed_one(
    redis_server: RedisServer,
) -> None:
    with trio.fail_after(60):
        async with cluster(redis_server) as nodes, raw_client(nodes[0].port) as asker, \
                raw_client(nodes[1].port) as b, raw_client(nodes[2].port) as c:
            for client in (asker, b, c):
                await join(client, "team")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(answer_calls, b, "b!")
                nursery.start_soon(answer_calls, c, "c!")
                results = await request(asker, "call_room",
                                        {"event": "ready?", "room": "team", "timeout": 2}, 1)
                assert results["answers"] == {b.sid: "b!", c.sid: "c!"}
                assert results["missing_nodes"] == []
                # Node 2 dies at once: the call must not wait for it beyond its
                # timeout, and must name it.
                c_node = c.sid[:8]
                nodes[2].process.send_signal(signal.SIGKILL)
                nodes[2].process.wait(10)
                start = trio.current_time()
                results = await request(asker, "call_room",
                                        {"event": "ready?", "room": "team", "timeout": 1}, 2)
                assert trio.current_time() - start < 1 + 2.5
                assert results["answers"] == {b.sid: "b!"}
                assert results["missing_nodes"] == [c_node]
                # Its members disappear within the liveness bound (2 s here).
                with trio.fail_after(2 + 3):
                    while True:
                        members = await request(asker, "members", "team", 3)
                        if c.sid not in [sid for sid, _ in members]:
                            break
                        await trio.sleep(0.2)
                nursery.cancel_scope.cancel()


async def test_redis_restarted_mid_traffic(own_redis: RedisServer) -> None:
    with trio.fail_after(90):
        async with cluster(own_redis, 2) as nodes, raw_client(nodes[0].port) as a, \
                raw_client(nodes[1].port) as b:
            await join(a, "feed")
            await join(b, "feed")
            own_redis.restart()  # everything in Redis is gone: a new epoch follows
            # The nodes reconnect and resubscribe by themselves; cross-node delivery
            # resumes (a publish during the outage is refused, not lost silently).
            with trio.fail_after(30):
                while True:
                    await a.send(Publish("feed", "tick", "after", 7))
                    answer = await a.recv(timeout=10)
                    if isinstance(answer, Ack) and answer.data is not None:
                        break
                    await trio.sleep(0.2)
            while True:
                event = await b.recv(timeout=10)
                assert isinstance(event, RoomEvent)
                if event.data == "after":
                    break
