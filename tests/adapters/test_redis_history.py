"""The Redis adapter's history, against a real redis-server: kept by the script that
numbers, never served across epochs, and read back to repair what a node missed, so
that a Redis blip is invisible to clients (the rules of test_redis.py hold here).

Some tests run the publish script by hand with another channel than the room's: the
message is numbered and kept, yet no node receives it, which is exactly what a node
misses when its subscription breaks, without having to break one at the right time.
"""

from __future__ import annotations

import secrets
from typing import Any

import coredis
import msgpack
import pytest
import trio
from coredis.tokens import PureToken

from eventbus import Unavailable
from eventbus.adapters import Envelope, HistoryBounds, Signal, SignalKind
from eventbus.adapters.conformance import RecordingNode
from eventbus.adapters.redis import RedisAdapter
from eventbus.adapters.redis.history import history_args
from eventbus.adapters.redis.keys import Keys
from eventbus.adapters.redis.scripts import PUBLISH
from eventbus.adapters.redis.wire import ROOM_HEAD, Undecodable, decode_tail, room_tail
from eventbus.protocol import Position

from .conftest import RedisServer
from .test_redis import FAST, new_prefix, raw, serving, until

pytestmark = pytest.mark.redis

KEEP = HistoryBounds(1000, 120.0, 1 << 20)


async def hidden_publish(client: coredis.Redis[bytes], prefix: str, envelope: Envelope,
                         bounds: HistoryBounds | None = KEEP) -> tuple[str, int]:
    """Number and keep ``envelope`` as a node would, but publish it to a channel no
    node listens to; returns its position."""
    result: Any = await client.eval(PUBLISH, keys=Keys(prefix).room_keys(envelope.room), args=[
        secrets.token_urlsafe(6), 86400_000, "nobody-listens", ROOM_HEAD, room_tail(envelope),
        *history_args(bounds, envelope)])
    return bytes(result[0]).decode(), int(result[1])


def wire(envelope: Envelope, position: Position) -> bytes:
    """A room message as the publish script sends it."""
    return (ROOM_HEAD + msgpack.packb(position.epoch) + msgpack.packb(position.seq)
            + room_tail(envelope))


def seen(node: RecordingNode, room: str) -> list[tuple[Any, int]]:
    return [(envelope.data, position.seq) for envelope, position in node.delivered
            if envelope.room == room]


# --- kept by the script that numbers ------------------------------------------------------


async def test_every_message_numbered_is_kept_at_its_seq(redis_server: RedisServer) -> None:
    prefix = new_prefix()
    adapters = [RedisAdapter(redis_server.url, prefix=prefix, **FAST) for _ in range(3)]
    async with serving(*adapters) as nodes, raw(redis_server) as client:
        (a, _), (b, _), (c, nc) = nodes
        await c.subscribe("r")
        sent: dict[tuple[str, int], Envelope] = {}

        async def publish(index: int, adapter: RedisAdapter) -> None:
            for n in range(100):
                envelope = Envelope("r", "e", [index, n], sender=f"s{index}",
                                    publish_id=n + 1 if n % 2 else None)
                sent[(f"s{index}", n)] = envelope
                if n % 3:
                    adapter.publish_nowait(envelope)
                else:
                    await adapter.publish(envelope)
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            for index, adapter in enumerate((a, b, c)):
                nursery.start_soon(publish, index, adapter)
        await nc.wait_for(delivered=300)

        room = "{" + prefix + ":r}"
        entries = await client.xrange(f"{room}:h")
        assert [entry.identifier for entry in entries] == [
            f"{seq}-0".encode() for seq in range(1, 301)], "every seq, once, in order"
        meta = await client.hgetall(f"{room}:m")
        assert (meta[b"s"], meta[b"k"]) == (b"300", b"300")
        assert int(meta[b"b"]) == sum(len(entry.field_values[b"m"]) for entry in entries)
        kept = [decode_tail(entry.field_values[b"m"]) for entry in entries]
        assert kept == [envelope for envelope, _ in nc.delivered], (
            "history holds what the nodes received, at the same seqs")
        assert sorted(kept, key=lambda e: (e.sender, e.data)) == sorted(
            sent.values(), key=lambda e: (e.sender, e.data))
        ids = await client.hgetall(f"{room}:i")
        assert len(ids) == 150
        assert all(kept[int(seq) - 1].publish_id == int(key.split(b":")[1])
                   for key, seq in ids.items())


async def test_a_history_with_a_hole_is_started_again(redis_server: RedisServer) -> None:
    prefix = new_prefix()
    adapter = RedisAdapter(redis_server.url, prefix=prefix, **FAST)
    async with serving(adapter), raw(redis_server) as client:
        for n in range(3):
            await adapter.publish(Envelope("r", "e", n))
        # A node whose policy keeps no history for the room numbers one more.
        epoch, seq = await hidden_publish(client, prefix, Envelope("r", "e", 3), None)
        assert seq == 4
        page = await adapter.history("r", epoch, 0, 10, KEEP)
        assert (page.position, page.first, list(page.messages)) == (
            Position(epoch, 4), 5, []), "history that does not reach the last seq has a hole"
        assert (await adapter.publish(Envelope("r", "e", 4))).kept
        page = await adapter.history("r", epoch, 0, 10, KEEP)
        assert page.first == 5
        assert [(seq, envelope.data) for seq, envelope in page.messages] == [(5, 4)]

        # An entry past the numbering (left by a numbering that is gone) cannot make
        # a message numbered without being kept either.
        await client.xadd("{" + prefix + ":r}:h", {"m": b"?", "t": b"0", "n": b"1"},
                          identifier="1000-0")
        published = await adapter.publish(Envelope("r", "e", 5))
        assert (published.position.seq, published.kept) == (6, True)
        page = await adapter.history("r", epoch, 0, 10, KEEP)
        assert [(seq, envelope.data) for seq, envelope in page.messages] == [(6, 5)]


async def test_a_publish_id_past_the_age_applies_again_and_then_once(
    redis_server: RedisServer,
) -> None:
    prefix = new_prefix()
    adapter = RedisAdapter(redis_server.url, prefix=prefix, **FAST)
    brief = HistoryBounds(100, 0.5, 1 << 20)
    async with serving(adapter) as [(_, node)], raw(redis_server) as client:
        node.room_bounds["r"] = brief
        first = await adapter.publish(Envelope("r", "e", 1, sender="s", publish_id=1))
        await trio.sleep(0.3)
        await adapter.publish(Envelope("r", "e", 2))  # the history lives on
        await trio.sleep(0.25)
        # The first is past the age, though no publish has trimmed it yet.
        again = await adapter.publish(Envelope("r", "e", 1, sender="s", publish_id=1))
        assert (again.repeat, again.position.seq) == (False, first.position.seq + 2)
        once = await adapter.publish(Envelope("r", "e", 1, sender="s", publish_id=1))
        assert (once.repeat, once.position) == (True, again.position), (
            "trimming the first did not take the key from the second")
        assert await client.hgetall("{" + prefix + ":r}:i") == {
            b"s:1": str(again.position.seq).encode()}


async def test_a_lost_position_takes_its_history_along(redis_server: RedisServer) -> None:
    prefix = new_prefix()
    adapter = RedisAdapter(redis_server.url, prefix=prefix, **FAST)
    async with serving(adapter), raw(redis_server) as client:
        old = [await adapter.publish(Envelope("r", "e", n)) for n in range(3)][-1].position
        # As if Redis evicted the room's position, and kept its history.
        await client.delete(["{" + prefix + ":r}:m"])
        page = await adapter.history("r", old.epoch, 0, 10, KEEP)
        assert page.position.epoch != old.epoch
        assert (page.position.seq, page.first, list(page.messages)) == (0, 1, [])
        new = (await adapter.publish(Envelope("r", "e", "new"))).position
        assert new == Position(page.position.epoch, 1)
        page = await adapter.history("r", new.epoch, 0, 10, KEEP)
        assert [(seq, envelope.data) for seq, envelope in page.messages] == [(1, "new")]
        assert list((await adapter.history("r", old.epoch, 0, 10, KEEP)).messages) == []


async def test_a_redis_restart_without_persistence_serves_no_old_history(
    own_redis: RedisServer,
) -> None:
    prefix = new_prefix()
    a, b = (RedisAdapter(own_redis.url, prefix=prefix, **FAST) for _ in range(2))
    async with serving(a, b):
        secret = a.shared_secret()
        assert secret is not None
        assert secret == b.shared_secret(), "one secret for every node"
        old = [await a.publish(Envelope("r", "e", n)) for n in range(3)][-1].position
        assert len((await b.history("r", old.epoch, 0, 10, KEEP)).messages) == 3
        await trio.to_thread.run_sync(own_redis.restart)  # SIGKILL, then start empty
        with trio.fail_after(5):
            while True:
                try:
                    page = await b.history("r", old.epoch, 0, 10, KEEP)
                    break
                except Unavailable:
                    await trio.sleep(0.02)
        assert page.position.epoch != old.epoch, "a new epoch"
        assert (page.position.seq, page.first, list(page.messages)) == (0, 1, [])
        await until(lambda: a.state.value == "connected")
        new = (await a.publish(Envelope("r", "e", "new"))).position
        assert new == Position(page.position.epoch, 1)
        assert [seq for seq, _ in (await b.history("r", new.epoch, 0, 10, KEEP)).messages] == [1]
        assert a.shared_secret() == b.shared_secret() == secret, (
            "the first node back restored the secret")
        async with raw(own_redis) as client:
            assert await client.get(f"{prefix}:secret") == secret


async def test_history_is_unavailable_without_redis(redis_server: RedisServer) -> None:
    prefix = new_prefix()
    adapter = RedisAdapter(redis_server.url, prefix=prefix, **FAST)
    assert adapter.shared_secret() is None, "not known before the first connection"
    with pytest.raises(Unavailable):
        await adapter.history("r", "e", 0, 10, KEEP)
    async with serving(adapter), raw(redis_server) as client:
        await client.set("{" + prefix + ":broken}:m", b"not a hash")
        with pytest.raises(Unavailable):
            await adapter.history("broken", "e", 0, 10, KEEP)
        assert adapter.state.value == "connected"


async def test_a_history_entry_this_version_cannot_read_is_left_out_and_counted(
    redis_server: RedisServer,
) -> None:
    prefix = new_prefix()
    adapter = RedisAdapter(redis_server.url, prefix=prefix, **FAST)
    async with serving(adapter), raw(redis_server) as client:
        first = (await adapter.publish(Envelope("r", "e", 1))).position
        # What a node of a later version might keep, and then a message of it that
        # this version reads: values past the ones it knows are ignored.
        room = "{" + prefix + ":r}"
        for seq, tail in ((2, msgpack.packb("not a tail")),
                          (3, room_tail(Envelope("r", "e", 3, publish_id=3)) + b"\xc0")):
            await client.xadd(f"{room}:h", {"m": tail, "t": b"9" * 13, "n": b"1"},
                              identifier=f"{seq}-0")
            await client.hset(f"{room}:m", {"s": seq, "k": seq})
        page = await adapter.history("r", first.epoch, 0, 10, KEEP)
        assert [(seq, envelope.data) for seq, envelope in page.messages] == [(1, 1), (3, 3)]
        assert adapter.statistics()["undecodable"] == 1
        # A page of 2 whose 2 entries hold an unreadable one reads on: a short page
        # must mean the end of the history (a resume or a repair stops there).
        page = await adapter.history("r", first.epoch, 0, 2, KEEP)
        assert [seq for seq, _ in page.messages] == [1, 3]


def test_a_tail_is_read_back_as_it_was_written() -> None:
    envelope = Envelope("r", "e", {"a": [1, b"\x00"]}, "s", "latest", "k", 2**53 - 1)
    assert decode_tail(room_tail(envelope)) == envelope
    for junk in (b"\xc1", msgpack.packb("r") * 5, room_tail(Envelope("r", "e"))[:-3],
                 b"".join(msgpack.packb(v) for v in ("r", "e", None, None, "reliable", None,
                                                      "not an id"))):
        with pytest.raises(Undecodable):
            decode_tail(junk)


async def test_a_takeover_signal_reaches_its_node(redis_server: RedisServer) -> None:
    prefix = new_prefix()
    a, b = (RedisAdapter(redis_server.url, prefix=prefix, **FAST) for _ in range(2))
    async with serving(a, b) as [(_, na), (_, nb)]:
        takeover = Signal(SignalKind.TAKEOVER, na.node_id, [nb.node_id + "sid"])
        assert a.signal_nowait(takeover, node=nb.node_id) is None
        await nb.wait_for(signals=1)
        assert nb.signals == [takeover]


# --- a node's repairs ---------------------------------------------------------------------


async def test_a_jump_in_seqs_is_repaired_from_history_before_the_message(
    redis_server: RedisServer,
) -> None:
    prefix = new_prefix()
    a, b = (RedisAdapter(redis_server.url, prefix=prefix, **FAST) for _ in range(2))
    async with serving(a, b) as [_, (_, nb)], raw(redis_server) as client:
        await b.subscribe("r")
        await a.publish(Envelope("r", "e", 0))
        for n in range(1, 4):
            await hidden_publish(client, prefix, Envelope("r", "e", n))
        last = (await a.publish(Envelope("r", "e", 4))).position
        await nb.wait_for(delivered=5)
        assert seen(nb, "r") == [(n, n + 1) for n in range(5)], "in order, once"
        assert b.statistics()["repaired"] == 3
        assert (b.statistics()["lost_received"], nb.lost_reports) == (0, [])
        # A message sent again (a node of another version, say) is handed only once.
        channel = "{" + prefix + ":r}:c"
        await client.publish(channel, wire(Envelope("r", "e", "again"), last))
        await a.publish(Envelope("r", "e", 5))
        await nb.wait_for(delivered=6)
        assert seen(nb, "r")[-2:] == [(4, 5), (5, 6)]


async def test_what_history_no_longer_holds_is_reported_lost(redis_server: RedisServer) -> None:
    prefix = new_prefix()
    a, b = (RedisAdapter(redis_server.url, prefix=prefix, **FAST) for _ in range(2))
    small = HistoryBounds(2, 120.0, 1 << 20)
    async with serving(a, b) as [(_, na), (_, nb)], raw(redis_server) as client:
        na.room_bounds["r"] = small
        await b.subscribe("r")
        await a.publish(Envelope("r", "e", 0))
        for n in range(1, 6):
            await hidden_publish(client, prefix, Envelope("r", "e", n), small)
        await a.publish(Envelope("r", "e", 6))
        await nb.wait_for(delivered=3)
        # History kept 6 and 7 (seqs): 2..5 are gone, 6 is read back, then 7.
        assert seen(nb, "r") == [(0, 1), (5, 6), (6, 7)]
        assert nb.lost_reports == [("r", 4)]
        stats = b.statistics()
        assert (stats["repaired"], stats["lost_received"]) == (1, 4)

        # A room without history: all of it is reported.
        na.room_bounds["off"] = nb.room_bounds["off"] = None
        await b.subscribe("off")
        await a.publish(Envelope("off", "e", 0))
        for n in range(1, 4):
            await hidden_publish(client, prefix, Envelope("off", "e", n), None)
        await a.publish(Envelope("off", "e", 4))
        await until(lambda: len(seen(nb, "off")) == 2)
        assert seen(nb, "off") == [(0, 1), (4, 5)]
        assert nb.lost_reports[-1] == ("off", 3)
        assert b.statistics()["lost_received"] == 4 + 3


async def test_a_new_epoch_is_repaired_from_its_start(redis_server: RedisServer) -> None:
    prefix = new_prefix()
    a, b = (RedisAdapter(redis_server.url, prefix=prefix, **FAST) for _ in range(2))
    async with serving(a, b) as [_, (_, nb)], raw(redis_server) as client:
        old = await b.subscribe("r")
        await a.publish(Envelope("r", "e", "old"))
        await nb.wait_for(delivered=1)
        await client.delete(["{" + prefix + ":r}:m"])  # Redis lost the room
        epoch, _ = await hidden_publish(client, prefix, Envelope("r", "e", "new-1"))
        await a.publish(Envelope("r", "e", "new-2"))
        await nb.wait_for(delivered=3)
        assert [(envelope.data, position) for envelope, position in nb.delivered] == [
            ("old", Position(old.epoch, 1)), ("new-1", Position(epoch, 1)),
            ("new-2", Position(epoch, 2))]
        stats = b.statistics()
        assert (stats["epochs_lost"], stats["repaired"], stats["lost_received"]) == (1, 1, 0)


async def test_a_full_inbox_loses_nothing_that_history_holds(redis_server: RedisServer) -> None:
    prefix = new_prefix()
    a = RedisAdapter(redis_server.url, prefix=prefix, **FAST)
    b = RedisAdapter(redis_server.url, prefix=prefix, inbox_size=1, **FAST)
    async with serving(a, b) as [_, (_, nb)], raw(redis_server) as client:
        await b.subscribe("r")
        # A jump first: while b reads history, the burst fills its inbox of one.
        await hidden_publish(client, prefix, Envelope("r", "e", 0))
        for n in range(1, 300):
            a.publish_nowait(Envelope("r", "e", n))
        await until(lambda: len(nb.delivered) == 300)
        assert seen(nb, "r") == [(n, n + 1) for n in range(300)], "in order, once, complete"
        stats = b.statistics()
        assert (stats["lost_received"], nb.lost_reports) == (0, [])
        assert stats["repaired"] > 1, "messages dropped with the inbox full were read back"


async def test_a_killed_subscription_misses_nothing(
    own_redis: RedisServer, capsys: pytest.CaptureFixture[str],
) -> None:
    prefix = new_prefix()
    a, b = (RedisAdapter(own_redis.url, prefix=prefix, **FAST) for _ in range(2))
    async with serving(a, b) as [_, (_, nb)], raw(own_redis) as client:
        await b.subscribe("r")
        for n in range(20):
            await a.publish(Envelope("r", "e", n))
        await nb.wait_for(delivered=20)
        for round_ in range(3):
            assert await client.client_kill(type_=PureToken.PUBSUB) == 2
            # At once, in one pipeline: before b can have subscribed again.
            for n in range(50):
                a.publish_nowait(Envelope("r", "e", 20 + 50 * round_ + n))
            await until(lambda r=round_: len(nb.delivered) == 70 + 50 * r)
            await until(lambda r=round_: a.statistics()["resubscriptions"] == r + 1)
        assert seen(nb, "r") == [(n, n + 1) for n in range(170)], "in order, once, complete"
        stats = b.statistics()
        assert (stats["lost_received"], stats["resubscriptions"]) == (0, 3)
        assert stats["repaired"] > 0, "some were published while b was not subscribed"
        with capsys.disabled():
            print(f"\n[client kill x3] 150 published at each kill, {stats['repaired']} read back"
                  " from history")


async def test_a_redis_restored_from_an_older_snapshot_starts_a_new_epoch(
    own_redis: RedisServer,
) -> None:
    prefix = new_prefix()
    adapter = RedisAdapter(own_redis.url, prefix=prefix, **FAST)
    async with serving(adapter) as [(_, node)]:
        await adapter.subscribe("r")
        for n in range(3):
            await adapter.publish(Envelope("r", "e", n))
        async with raw(own_redis) as client:
            await client.save()  # the snapshot: the room at seq 3
        old = [await adapter.publish(Envelope("r", "e", n)) for n in range(3, 5)][-1].position
        await node.wait_for(delivered=5)
        assert old.seq == 5
        # Redis dies and comes back from the snapshot: it numbered up to 5, it now
        # remembers 3; seqs 4 and 5 would be given out again.
        await trio.to_thread.run_sync(own_redis.restart)
        await until(lambda: adapter.state.value == "connected")
        with trio.fail_after(5):
            while True:
                try:
                    new = (await adapter.publish(Envelope("r", "e", "after"))).position
                    break
                except Unavailable:
                    await trio.sleep(0.02)
        assert new.epoch != old.epoch, "a new epoch: no seq of the old one given twice"
        assert new.seq == 1
        page = await adapter.history("r", old.epoch, 3, 10, KEEP)
        assert page.position == new
        assert list(page.messages) == [], "the old epoch's history is not served as the new"
        await node.wait_for(delivered=6)
        envelope, position = node.delivered[-1]
        assert (envelope.data, position) == ("after", new), "delivered, not taken for a repeat"
