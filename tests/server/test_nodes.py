"""Several nodes of one bus, in one process on a shared MemoryHub, each serving its
own port on 127.0.0.1: rooms, positions, direct events, calls and members across
nodes behave as on one node. (The same scenarios run across processes on Redis in
tests/adapters.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.lowlevel

from eventbus import Connection, EventBus, Unavailable
from eventbus.adapters import Envelope, MemoryAdapter, MemoryHub
from eventbus.protocol import (
    Ack,
    Emit,
    ErrorReply,
    Event,
    Gap,
    Join,
    Position,
    Publish,
    RoomEvent,
)

from .conftest import open_bus, raw_client, serving
from .test_delivery import PAYLOAD, StalledClient


@asynccontextmanager
async def serving_nodes(
    count: int = 3, **settings: Any,
) -> AsyncIterator[list[tuple[EventBus, int]]]:
    hub = MemoryHub()
    buses = [open_bus(adapter=MemoryAdapter(hub), **settings) for _ in range(count)]
    for bus in buses:

        @bus.on("who")
        async def who(sock: Connection, data: Any) -> Any:
            return sock.sid

    async with serving(buses[0]) as p0, serving(buses[1]) as p1, serving(buses[2]) as p2:
        yield list(zip(buses, [p0, p1, p2], strict=True))


async def join(client: Any, room: str, ack_id: int = 100) -> list[Any]:
    await client.send(Join(room, ack_id))
    answer = await client.recv()
    assert isinstance(answer, Ack)
    assert answer.ack_id == ack_id
    return list(answer.data)


async def test_a_publish_reaches_every_member_on_every_node_once_but_the_sender() -> None:
    with trio.fail_after(10):
        async with serving_nodes(3) as nodes, \
                raw_client(nodes[0][1]) as a, raw_client(nodes[1][1], "msgpack") as b, \
                raw_client(nodes[2][1]) as c, raw_client(nodes[2][1], "msgpack") as d:
            positions = [await join(client, "lobby") for client in (a, b, c, d)]
            assert len({epoch for epoch, _ in positions}) == 1  # one room, one epoch
            for n in range(5):
                await a.send(Publish("lobby", "say", {"n": n, "blob": "x"}, n + 1))
                ack = await a.recv()
                assert isinstance(ack, Ack)
            got = {}
            for client in (b, c, d):
                events = [await client.recv() for _ in range(5)]
                assert all(isinstance(event, RoomEvent) for event in events)
                got[client.sid] = [(e.data["n"], e.epoch, e.seq) for e in events]  # type: ignore[union-attr]
            # Identical, dense positions at every member, in the publisher's order.
            assert len(set(map(tuple, got.values()))) == 1
            seqs = [seq for _, _, seq in got[b.sid]]
            assert seqs == list(range(seqs[0], seqs[0] + 5))
            await a.recv_nothing()  # never the sender


async def test_events_to_a_sid_on_another_node_and_calls_across_nodes() -> None:
    with trio.fail_after(10):
        async with serving_nodes(3) as nodes, raw_client(nodes[0][1]) as a, \
                raw_client(nodes[1][1]) as b, raw_client(nodes[2][1]) as c:
            bus0 = nodes[0][0]
            assert bus0.emit("direct", {"to": "b"}, to_sid=b.sid) == 1
            assert await b.recv() == Event("direct", {"to": "b"})
            await a.recv_nothing()
            for client in (a, b, c):
                await join(client, "team")

            async def answer(client: Any, reply: Any) -> None:
                request = await client.recv()
                assert isinstance(request, Event)
                assert request.ack_id is not None
                if reply is not None:
                    await client.send(Ack(request.ack_id, reply))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(answer, a, "a!")
                nursery.start_soon(answer, b, "b!")
                nursery.start_soon(answer, c, None)  # c does not answer
                results = await bus0.call("ready?", None, to="team", timeout=0.5)
            assert results.answers == {a.sid: "a!", b.sid: "b!"}
            assert list(results.timed_out) == [c.sid]
            assert list(results.missing_nodes) == []
            # One connection of another node, by sid.
            async with trio.open_nursery() as nursery:
                nursery.start_soon(answer, c, "c!")
                one = await bus0.call("you?", None, to_sid=c.sid, timeout=0.5)
            assert one.answers == {c.sid: "c!"}


async def test_members_across_nodes() -> None:
    with trio.fail_after(10):
        async with serving_nodes(3) as nodes, raw_client(nodes[0][1]) as a, \
                raw_client(nodes[1][1]) as b:
            bus0, bus1 = nodes[0][0], nodes[1][0]
            await join(a, "r")
            await join(b, "r")
            members = await bus0.all_members("r")
            assert sorted((m.sid, m.node) for m in members) == sorted(
                [(a.sid, bus0.node_id), (b.sid, bus1.node_id)])
            assert a.sid.startswith(bus0.node_id)
            assert [sock.sid for sock in bus0.members("r")] == [a.sid]
            await b.send(Emit("who", None, 1))
            assert await b.recv() == Ack(1, b.sid)


class _FlakyAdapter(MemoryAdapter):
    """A hub node that cannot reach the others: as the Redis adapter during an outage."""

    down = False

    async def subscribe(self, room: str) -> Any:
        if self.down:
            raise Unavailable("the other nodes cannot be reached")
        return await super().subscribe(room)

    def signal_nowait(self, signal: Any, *, node: str) -> bool:
        if self.down:
            raise Unavailable("the other nodes cannot be reached")
        return super().signal_nowait(signal, node=node)


async def test_an_unreachable_adapter_refuses_joins_whole_and_a_call_names_the_node() -> None:
    hub = MemoryHub()
    flaky = _FlakyAdapter(hub)
    good, bad = open_bus(adapter=MemoryAdapter(hub)), open_bus(adapter=flaky)
    with trio.fail_after(10):
        async with serving(good) as p0, serving(bad) as p1, raw_client(p0) as asker, \
                raw_client(p1) as member:
            await join(asker, "r")
            await join(member, "r")
            flaky.down = True
            # The member's node cannot report its answers: the call names that node.
            async with trio.open_nursery() as nursery:

                async def answer() -> None:
                    request = await member.recv()
                    assert isinstance(request, Event)
                    assert request.ack_id is not None
                    await member.send(Ack(request.ack_id, "here"))

                nursery.start_soon(answer)
                results = await good.call("q", None, to="r", timeout=0.3)
            assert results.answers == {}
            assert list(results.missing_nodes) == [bad.node_id]
            # A join while the adapter is down is refused whole.
            await member.send(Join("other", 7))
            refused = await member.recv()
            assert isinstance(refused, ErrorReply)
            assert (refused.ack_id, refused.code) == (7, "unavailable")
            sock = bad.connections[member.sid]
            assert "other" not in sock.rooms
            assert bad.members("other") == []


async def test_delivery_policies_and_gaps_hold_for_members_of_another_node() -> None:
    hub = MemoryHub()
    settings = {"send_queue_size": 16, "send_queue_bytes": 1024 * 1024}
    publisher_node = open_bus(adapter=MemoryAdapter(hub), **settings)
    member_node = open_bus(adapter=MemoryAdapter(hub), **settings)
    with trio.fail_after(20):
        async with serving(publisher_node), serving(member_node) as port, \
                StalledClient.connect(port) as stalled:
            (sock,) = member_node.connections.values()
            sock.join("game")
            total = 300
            for n in range(total):
                publisher_node.emit("state", {"n": n, "pad": PAYLOAD}, to="game",
                                    delivery="volatile")
                await trio.lowlevel.checkpoint()
            assert not sock.closed  # volatile overflow never disconnects

            def complete(packets: list[Any]) -> bool:
                events = [p for p in packets if isinstance(p, RoomEvent)]
                return len(events) + sum(p.count for p in packets if isinstance(p, Gap)) >= total

            packets = await stalled.read_packets(complete)
            gaps = [p for p in packets if isinstance(p, Gap)]
            assert gaps, "drops on the member's node are reported there"
            assert all(gap.room == "game" for gap in gaps)
            seqs = [p.seq for p in packets if isinstance(p, RoomEvent)]
            assert seqs == sorted(seqs)
            # A reliable message that does not fit closes that member's connection
            # with 4001 on its own node, whoever published it.
            for _ in range(200):
                publisher_node.emit("big", {"pad": PAYLOAD * 10}, to="game")
                if sock.closed:
                    break
                await trio.lowlevel.checkpoint()
            assert sock.disconnect is not None
            assert sock.disconnect.code == 4001


async def test_a_message_this_node_cannot_deliver_is_logged_not_fatal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = open_bus()
    with trio.fail_after(10):
        async with serving(bus) as port, raw_client(port) as member:
            await join(member, "r")
            # As if from a newer node: a delivery policy this version does not know.
            bus._router.deliver(Envelope("r", "e", 1, delivery="someday"), Position("x", 9))
            assert bus.emit("e", 2, to="r") == 1
            packet = await member.recv()
            assert isinstance(packet, RoomEvent)
            assert packet.data == 2
    assert "could not deliver a message of room 'r'" in caplog.text
