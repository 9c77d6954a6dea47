"""The conformance suite every adapter passes: ``eventbus.testing.check_adapter``.

It drives adapters directly, each serving a recording stand-in for a node, and
checks what the rest of eventbus relies on: dense positions decided once for all
nodes, delivery to exactly the subscribed nodes, in order, once; signals to one
node or to a room's nodes, with exact receiver counts; presence across nodes;
history read back after a seq, trimmed to its bounds (count, bytes, age), and tied
to its epoch; publish ids applied once while their message is in history.
Like trio's ``check_two_way_stream``, it is public so that a new adapter (NATS,
say) can prove itself with the same checks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import trio

from ..protocol import Position
from .base import Adapter, AdapterState, Envelope, HistoryBounds, Member, Signal, SignalKind

__all__ = ["RecordingNode", "check_adapter"]

#: Makes ``count`` adapters joined to one backend (a hub, a Redis server), fresh
#: for each check, and closes what it opened when the block ends.
AdapterFactory = Callable[[int], AbstractAsyncContextManager[Sequence[Adapter]]]


class RecordingNode:
    """A node that records what its adapter hands it."""

    def __init__(self, node_id: str) -> None:
        self._node_id = node_id
        self.delivered: list[tuple[Envelope, Position]] = []
        self.signals: list[Signal] = []
        self.rooms: dict[str, list[str]] = {}
        #: What ``history_bounds`` answers, by room (absent: :attr:`bounds`).
        self.room_bounds: dict[str, HistoryBounds | None] = {}
        self.bounds: HistoryBounds | None = HistoryBounds(1000, 120.0, 1 << 20)
        #: What ``lost`` was told: (room, count).
        self.lost_reports: list[tuple[str, int]] = []
        self._arrived = trio.Event()

    @property
    def node_id(self) -> str:
        return self._node_id

    def deliver(self, envelope: Envelope, position: Position) -> None:
        self.delivered.append((envelope, position))
        self._arrived.set()

    def receive_signal(self, signal: Signal) -> None:
        self.signals.append(signal)
        self._arrived.set()

    def local_members(self, room: str) -> Sequence[str]:
        return self.rooms.get(room, [])

    def history_bounds(self, room: str) -> HistoryBounds | None:
        return self.room_bounds.get(room, self.bounds)

    def lost(self, room: str, count: int) -> None:
        self.lost_reports.append((room, count))
        self._arrived.set()

    async def wait_for(self, delivered: int = 0, signals: int = 0, timeout: float = 5) -> None:
        """Wait until this many messages and signals in all have arrived."""
        with trio.fail_after(timeout):
            while len(self.delivered) < delivered or len(self.signals) < signals:
                self._arrived = trio.Event()
                await self._arrived.wait()


@asynccontextmanager
async def _serving(
    factory: AdapterFactory, count: int,
) -> AsyncIterator[list[tuple[Adapter, RecordingNode]]]:
    async with factory(count) as adapters, trio.open_nursery() as nursery:
        pairs = []
        for index, adapter in enumerate(adapters):
            node = RecordingNode(f"node-{index}")
            await nursery.start(adapter.run, node)
            pairs.append((adapter, node))
        yield pairs
        nursery.cancel_scope.cancel()


async def _check_positions_are_dense_and_shared(factory: AdapterFactory) -> None:
    async with _serving(factory, 3) as nodes:
        (a, na), (b, nb), (c, nc) = nodes
        assert a.state is AdapterState.CONNECTED
        first = await a.subscribe("room")
        assert first == await b.subscribe("room"), "every node sees one position"
        # c is not subscribed: it gets nothing.
        results = [await (a if n % 2 else b).publish(Envelope("room", "e", n)) for n in range(6)]
        seqs = [result.position.seq for result in results]
        assert seqs == list(range(first.seq + 1, first.seq + 7)), f"dense positions: {seqs}"
        assert {result.position.epoch for result in results} == {first.epoch}
        assert all(result.nodes == 2 for result in results), "two nodes are subscribed"
        await na.wait_for(delivered=6)
        await nb.wait_for(delivered=6)
        for node in (na, nb):
            got = [(envelope.data, position) for envelope, position in node.delivered]
            assert got == [(n, results[n].position) for n in range(6)], "in order, once"
        assert nc.delivered == []
        after = await c.position("room")
        assert after == results[-1].position, "position() is the room's latest"


async def _check_order_of_nowait_publishes(factory: AdapterFactory) -> None:
    async with _serving(factory, 2) as nodes:
        (a, _), (b, nb) = nodes
        await b.subscribe("ordered")
        for n in range(100):
            a.publish_nowait(Envelope("ordered", "e", n, sender="s1", delivery="volatile",
                                      key="k"))
        await nb.wait_for(delivered=100)
        assert [envelope.data for envelope, _ in nb.delivered] == list(range(100))
        envelope, _ = nb.delivered[0]
        assert (envelope.sender, envelope.delivery, envelope.key) == ("s1", "volatile", "k")
        seqs = [position.seq for _, position in nb.delivered]
        assert seqs == list(range(seqs[0], seqs[0] + 100))


async def _check_subscribe_nowait_takes_effect(factory: AdapterFactory) -> None:
    async with _serving(factory, 2) as nodes:
        (a, _), (b, nb) = nodes
        b.subscribe_nowait("later")
        with trio.fail_after(5):
            while (await a.publish(Envelope("later", "e", 0))).nodes == 0:  # noqa: ASYNC110
                await trio.sleep(0.01)
        await nb.wait_for(delivered=1)


async def _check_unsubscribed_nodes_get_nothing(factory: AdapterFactory) -> None:
    async with _serving(factory, 2) as nodes:
        (a, na), (b, _) = nodes
        await a.subscribe("r")
        await b.subscribe("r")
        b.unsubscribe_nowait("r")
        # An adapter may linger before it really unsubscribes (so that a member
        # leaving and another joining costs no churn): b may still count.
        published = await a.publish(Envelope("r", "e", 1))
        assert published.nodes in (1, 2)
        await na.wait_for(delivered=1)
        nobody = await a.publish(Envelope("nobody-here", "e", 1))
        assert nobody.nodes == 0


async def _check_signals_reach_one_node_or_a_rooms_nodes(factory: AdapterFactory) -> None:
    async with _serving(factory, 3) as nodes:
        (a, na), (b, nb), (c, nc) = nodes
        # a is subscribed too, but a signal never comes back to its sender.
        await a.subscribe("s")
        await b.subscribe("s")
        await c.subscribe("s")
        to_b = Signal(SignalKind.EVENT, na.node_id, ["sid", "e", [1, {"x": b"\x00"}], "reliable",
                                                    None])
        assert await a.signal(to_b, node=nb.node_id) == 1
        await nb.wait_for(signals=1)
        assert nb.signals == [to_b]
        assert await a.signal(to_b, node="no-such-node") == 0
        to_room = Signal(SignalKind.CALL, na.node_id, [7, "q", None, 1.5, None], room="s")
        assert await a.signal(to_room) == 2, "the other nodes of the room, not the sender"
        await nc.wait_for(signals=1)
        await nb.wait_for(signals=2)
        assert nc.signals == [to_room]
        assert await a.signal(to_b, node=na.node_id) == 0, "not to itself either"
        assert na.signals == []
        a.signal_nowait(Signal(SignalKind.ANSWERS, na.node_id, [7, {}, {}, []]),
                        node=nc.node_id)
        await nc.wait_for(signals=2)
        assert nc.signals[-1].kind is SignalKind.ANSWERS


async def _check_members_across_nodes(factory: AdapterFactory) -> None:
    async with _serving(factory, 2) as nodes:
        (a, na), (b, nb) = nodes
        for adapter, node, sids in ((a, na, ["a1", "a2"]), (b, nb, ["b1"])):
            await adapter.subscribe("m")
            node.rooms["m"] = list(sids)
            for sid in sids:
                adapter.member_joined("m", sid)
        with trio.fail_after(5):
            while True:
                members = sorted(await a.members("m"), key=lambda m: m.sid)
                if len(members) == 3:
                    break
                await trio.sleep(0.01)
        assert members == [Member("a1", na.node_id), Member("a2", na.node_id),
                           Member("b1", nb.node_id)]
        nb.rooms["m"] = []
        b.member_left("m", "b1")
        b.unsubscribe_nowait("m")
        with trio.fail_after(5):
            while len(await a.members("m")) != 2:  # noqa: ASYNC110 - polls the backend
                await trio.sleep(0.01)


#: The bounds of the history checks' rooms, unless a check says otherwise.
_KEEP = HistoryBounds(1000, 120.0, 1 << 20)


async def _check_history_reads_after_a_seq(factory: AdapterFactory) -> None:
    async with _serving(factory, 2) as nodes:
        (a, na), (b, _) = nodes
        start = await b.subscribe("hist")
        sent = [Envelope("hist", "e", {"n": n, "bin": b"\x00\x01", "list": [1, None]},
                         sender="s1") for n in range(4)]
        sent.append(Envelope("hist", "last", "x", sender="s2", delivery="latest", key="k",
                             publish_id=11))
        published = [await a.publish(envelope) for envelope in sent]
        assert all(result.kept and not result.repeat for result in published), (
            "a room with history keeps every message")
        epoch, top = start.epoch, published[-1].position
        page = await b.history("hist", epoch, start.seq + 1, 2, _KEEP)
        assert page.position == top, "history reads the room's position with it"
        assert page.first == start.seq + 1
        assert list(page.messages) == [(start.seq + 2, sent[1]), (start.seq + 3, sent[2])], (
            "after the seq asked for, at most the limit, every field as it was sent")
        rest = await a.history("hist", epoch, start.seq + 3, 100, _KEEP)
        assert list(rest.messages) == [(start.seq + 4, sent[3]), (top.seq, sent[4])]
        assert list((await a.history("hist", epoch, top.seq, 10, _KEEP)).messages) == []
        other = await a.history("hist", "not-" + epoch, 0, 10, _KEEP)
        assert (other.position, other.first, list(other.messages)) == (
            top, start.seq + 1, []), "another epoch's seqs say nothing of this one"
        new = await a.history("never-used", "x", 0, 10, _KEEP)
        assert (new.position.seq, new.first, list(new.messages)) == (0, 1, [])
        na.room_bounds["off"] = None
        assert not (await a.publish(Envelope("off", "e"))).kept, "a room without history"


async def _check_history_is_trimmed_to_its_bounds(factory: AdapterFactory) -> None:
    async with _serving(factory, 1) as nodes:
        [(a, na)] = nodes
        sized = na.room_bounds["sized"] = HistoryBounds(3, 120.0, 1 << 20)
        last = [await a.publish(Envelope("sized", "e", n)) for n in range(5)][-1].position
        page = await a.history("sized", last.epoch, 0, 10, sized)
        assert page.first == last.seq - 2, "the last 3 messages"
        assert [(seq, envelope.data) for seq, envelope in page.messages] == [
            (last.seq - 2, 2), (last.seq - 1, 3), (last.seq, 4)]

        # Each message counts at least its data's bytes, and not far more (~1 KiB).
        heavy = na.room_bounds["heavy"] = HistoryBounds(100, 120.0, 3500)
        last = [await a.publish(Envelope("heavy", "e", f"{n}" + "x" * 999))
                for n in range(6)][-1].position
        page = await a.history("heavy", last.epoch, 0, 10, heavy)
        assert [envelope.data[0] for _, envelope in page.messages] == ["3", "4", "5"]
        assert page.first == last.seq - 2

        aged = na.room_bounds["aged"] = HistoryBounds(100, 0.3, 1 << 20)
        for n in range(2):
            last = (await a.publish(Envelope("aged", "e", n))).position
        assert len((await a.history("aged", last.epoch, 0, 10, aged)).messages) == 2
        await trio.sleep(0.45)
        page = await a.history("aged", last.epoch, 0, 10, aged)
        assert (page.position, page.first, list(page.messages)) == (last, last.seq + 1, []), (
            "nothing older than the age")
        fresh = (await a.publish(Envelope("aged", "e", "fresh"))).position
        page = await a.history("aged", fresh.epoch, 0, 10, aged)
        assert page.first == fresh.seq
        assert [(seq, envelope.data) for seq, envelope in page.messages] == [
            (fresh.seq, "fresh")]


async def _check_a_publish_id_applies_once(factory: AdapterFactory) -> None:
    async with _serving(factory, 2) as nodes:
        (a, na), (b, nb) = nodes
        await b.subscribe("once")
        first = await a.publish(Envelope("once", "e", 1, sender="s1", publish_id=7))
        assert (first.kept, first.repeat) == (True, False)
        # Sent again by the session, resumed on another node.
        again = await b.publish(Envelope("once", "e", 1, sender="s1", publish_id=7))
        assert (again.position, again.kept, again.repeat) == (first.position, True, True)
        assert again.nodes == 0, "a repeat is sent to no node"
        other_session = await a.publish(Envelope("once", "e", 2, sender="s2", publish_id=7))
        other_id = await a.publish(Envelope("once", "e", 3, sender="s1", publish_id=8))
        assert (other_session.repeat, other_id.repeat) == (False, False)
        assert [other_session.position.seq, other_id.position.seq] == [
            first.position.seq + 1, first.position.seq + 2], "a repeat takes no seq"
        await nb.wait_for(delivered=3)
        assert [envelope.data for envelope, _ in nb.delivered] == [1, 2, 3], (
            "a repeat is not sent again")

        # Only while the first one is in history.
        short = na.room_bounds["short"] = HistoryBounds(2, 120.0, 1 << 20)
        kept = await a.publish(Envelope("short", "e", 0, sender="s1", publish_id=1))
        for n in range(2):
            await a.publish(Envelope("short", "e", n + 1, sender="s1"))
        later = await a.publish(Envelope("short", "e", 0, sender="s1", publish_id=1))
        assert (later.repeat, later.position.seq) == (False, kept.position.seq + 3)
        page = await a.history("short", later.position.epoch, 0, 10, short)
        assert [seq for seq, _ in page.messages] == [later.position.seq - 1, later.position.seq]

        # No effect in a room without history.
        na.room_bounds["loose"] = None
        await b.subscribe("loose")
        x = await a.publish(Envelope("loose", "e", 1, sender="s1", publish_id=7))
        y = await a.publish(Envelope("loose", "e", 1, sender="s1", publish_id=7))
        assert (x.kept, x.repeat, y.kept, y.repeat) == (False, False, False, False)
        assert y.position.seq == x.position.seq + 1


async def _check_a_history_never_has_a_hole(factory: AdapterFactory) -> None:
    async with _serving(factory, 2) as nodes:
        (a, na), (b, _) = nodes
        bounds = HistoryBounds(100, 120.0, 1 << 20)
        na.room_bounds["holey"] = None  # node a keeps no history of it; node b does
        await b.subscribe("holey")
        one = await b.publish(Envelope("holey", "e", 1))
        two = await a.publish(Envelope("holey", "e", 2))  # numbered, not kept
        three = await b.publish(Envelope("holey", "e", 3))
        assert (one.kept, two.kept, three.kept) == (True, False, True)
        page = await b.history("holey", one.position.epoch, one.position.seq, 10, bounds)
        # Never message 3 as if it followed message 1: history starts after the hole.
        assert page.first == three.position.seq
        assert [(seq, envelope.data) for seq, envelope in page.messages] == [
            (three.position.seq, 3)]


CHECKS = [
    _check_positions_are_dense_and_shared,
    _check_a_history_never_has_a_hole,
    _check_order_of_nowait_publishes,
    _check_subscribe_nowait_takes_effect,
    _check_unsubscribed_nodes_get_nothing,
    _check_signals_reach_one_node_or_a_rooms_nodes,
    _check_members_across_nodes,
    _check_history_reads_after_a_seq,
    _check_history_is_trimmed_to_its_bounds,
    _check_a_publish_id_applies_once,
]


async def check_adapter(factory: AdapterFactory) -> None:
    """Run every conformance check against the adapters ``factory`` makes.

    Raises:
        AssertionError: naming the first property the adapter breaks.
    """
    for check in CHECKS:
        await check(factory)
