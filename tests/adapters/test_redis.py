"""The Redis adapter, against a real redis-server (conftest.py starts one per run).

Rules: loopback only; every test uses a key prefix of its own, so tests on the
shared server never see each other; the tests that break Redis (stop, restart,
kill its subscribers, deafen them) get a server of their own; every wait is
bounded by ``trio.fail_after``; the adapters run with short intervals (``FAST``)
so that each fault shows within a second.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

if os.environ.get("CI") != "true":
    pytest.importorskip("coredis", reason="coredis (the redis extra) is not installed")

import coredis
import msgpack
from coredis.tokens import PureToken

from eventbus import Unavailable
from eventbus.adapters import Adapter, AdapterState, Envelope, Member, Signal, SignalKind
from eventbus.adapters.conformance import RecordingNode
from eventbus.adapters.redis import RedisAdapter
from eventbus.protocol import Position
from eventbus.testing import check_adapter

from .conftest import DeafeningProxy, RedisServer

pytestmark = pytest.mark.redis

# Short intervals, so that every fault shows within a second.
FAST: dict[str, Any] = {
    "linger": 0.2, "liveness_ttl": 1.0, "refresh_interval": 0.25, "probe_interval": 0.3,
    "probe_timeout": 0.3, "backoff": (0.02, 0.2), "command_timeout": 2.0,
    "connect_timeout": 1.0,
}
_prefixes = itertools.count()


def new_prefix() -> str:
    return f"t{os.getpid()}-{next(_prefixes)}"


@asynccontextmanager
async def serving(*adapters: RedisAdapter, ids: tuple[str, ...] = ()
                  ) -> AsyncIterator[list[tuple[RedisAdapter, RecordingNode]]]:
    """Run each adapter for a node of its own until the block ends."""
    async with trio.open_nursery() as nursery:
        pairs = []
        for index, adapter in enumerate(adapters):
            node = RecordingNode(ids[index] if ids else f"node-{index}")
            await nursery.start(adapter.run, node)
            pairs.append((adapter, node))
        yield pairs
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def raw(server: RedisServer) -> AsyncIterator[coredis.Redis[bytes]]:
    """A plain client, to look at what the adapters wrote."""
    client: coredis.Redis[bytes] = coredis.Redis.from_url(server.url)
    async with client:
        yield client


async def until(condition: Callable[[], Any], timeout: float = 5) -> float:
    """Poll ``condition`` until it holds; returns how long that took."""
    start = trio.current_time()
    with trio.fail_after(timeout):
        while not condition():  # noqa: ASYNC110 - polls other processes' doings
            await trio.sleep(0.005)
    return trio.current_time() - start


async def until_members(adapter: RedisAdapter, room: str, sids: set[str],
                        timeout: float = 5) -> float:
    start = trio.current_time()
    with trio.fail_after(timeout):
        while {member.sid for member in await adapter.members(room)} != sids:  # noqa: ASYNC110
            await trio.sleep(0.01)
    return trio.current_time() - start


def hash_tag(name: str) -> str:
    """What Redis Cluster hashes for ``name``: the text within its first ``{...}``."""
    start = name.find("{")
    end = name.find("}", start + 1)
    return name[start + 1:end] if start >= 0 and end > start + 1 else name


# --- conformance and layout ----------------------------------------------------------


async def test_the_redis_adapter_passes_the_conformance_suite(redis_server: RedisServer) -> None:
    @asynccontextmanager
    async def on_one_redis(count: int) -> AsyncIterator[list[Adapter]]:
        prefix = new_prefix()
        yield [RedisAdapter(redis_server.url, prefix=prefix, **FAST) for _ in range(count)]

    await check_adapter(on_one_redis)


async def test_names_carry_the_prefix_and_a_rooms_names_share_one_hash_tag(
    redis_server: RedisServer,
) -> None:
    prefix = new_prefix()
    a, b = (RedisAdapter(redis_server.url, prefix=prefix, **FAST) for _ in range(2))
    async with serving(a, b) as [(_, na), (_, nb)], raw(redis_server) as client:
        await a.subscribe("lobby")
        await b.subscribe("lobby")
        a.member_joined("lobby", "s1")
        await until_members(b, "lobby", {"s1"})
        async with client.pubsub(channels=[f"{{{prefix}:lobby}}:c"],
                                 ignore_subscribe_messages=True) as listener:
            published = await a.publish(Envelope("lobby", "hi", {"x": [1, b"\x00"]}, sender="s1"))
            with trio.fail_after(5):
                while (message := await listener.get_message()) is None:
                    pass
        assert published.nodes == 3, "every subscriber counts: two nodes, and this listener"
        wire = msgpack.unpackb(message["data"], raw=False)
        assert wire == [1, 1, published.position.epoch, published.position.seq, "lobby", "hi",
                        {"x": [1, b"\x00"]}, "s1", "reliable", None, None], "[version, kind, ...]"

        # A publish id: the room's publish keys too.
        await a.publish(Envelope("lobby", "hi", None, sender="s1", publish_id=9))
        keys = sorted(key.decode() for key in await client.keys(f"*{prefix}*"))
        channels = sorted(name.decode() for name in await client.pubsub_channels(f"*{prefix}*"))
        room = f"{{{prefix}:lobby}}"
        assert keys == sorted([f"{room}:m", f"{room}:p", f"{room}:h", f"{room}:i",
                               f"{prefix}:alive:{na.node_id}", f"{prefix}:alive:{nb.node_id}",
                               f"{prefix}:secret"])
        assert channels == sorted([f"{room}:c", f"{prefix}:node:{na.node_id}",
                                   f"{prefix}:node:{nb.node_id}"])
        assert {hash_tag(name) for name in [*keys, *channels] if "lobby" in name} == {
            f"{prefix}:lobby"}, "one slot for the room's keys and channel"
        meta = await client.hgetall(f"{room}:m")
        assert {k: v for k, v in meta.items() if k != b"b"} == {
            b"e": published.position.epoch.encode(), b"s": b"2", b"k": b"2"}
        assert int(meta[b"b"]) == sum(int(entry.field_values[b"n"])
                                      for entry in await client.xrange(f"{room}:h"))
        assert [entry.identifier for entry in await client.xrange(f"{room}:h")] == [
            b"1-0", b"2-0"]
        assert await client.hgetall(f"{room}:i") == {b"s1:9": b"2"}
        assert 0 < await client.pttl(f"{room}:h") <= 120_000, "about the history's age"
        assert await client.hgetall(f"{room}:p") == {b"s1": na.node_id.encode()}
        assert 29 * 86400_000 < await client.pttl(f"{room}:m") <= 30 * 86400_000
        assert 0 < await client.pttl(f"{prefix}:alive:{na.node_id}") <= 1000


async def test_two_prefixes_on_one_redis_do_not_see_each_other(redis_server: RedisServer) -> None:
    a = RedisAdapter(redis_server.url, prefix=new_prefix(), **FAST)
    b = RedisAdapter(redis_server.url, prefix=new_prefix(), **FAST)
    # Even their node ids are the same.
    async with serving(a, b, ids=("n", "n")) as [(_, na), (_, nb)]:
        pa, pb = await a.subscribe("room"), await b.subscribe("room")
        assert pa.epoch != pb.epoch
        a.member_joined("room", "a1")
        b.member_joined("room", "b1")
        assert (await a.publish(Envelope("room", "e", 1))).nodes == 1
        call = Signal(SignalKind.CALL, "n", [1, "q", None, 1.0, None], room="room")
        assert await a.signal(call) == 0, "b's node is not in a's room"
        await na.wait_for(delivered=1)
        await until_members(a, "room", {"a1"})
        await until_members(b, "room", {"b1"})
        assert await b.position("room") == Position(pb.epoch, 0)
        assert nb.delivered == []
        assert na.signals == nb.signals == []


async def test_the_layout_rejects_a_prefix_that_would_break_it() -> None:
    for prefix in ("", "a:b", "{a}", "a b"):
        with pytest.raises(ValueError, match="prefix"):
            RedisAdapter(prefix=prefix)
    with pytest.raises(ValueError, match="refresh_interval"):
        RedisAdapter(liveness_ttl=1, refresh_interval=1)


async def test_a_message_this_version_cannot_read_is_counted_and_logged_once(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture,
) -> None:
    prefix = new_prefix()
    adapter = RedisAdapter(redis_server.url, prefix=prefix, **FAST)
    async with serving(adapter) as [(_, node)], raw(redis_server) as client:
        await adapter.subscribe("room")
        junk = [b"\xc1", msgpack.packb({"not": "a list"}), msgpack.packb([2, 1, "a newer one"]),
                msgpack.packb([1, 99, "an unknown kind"]), msgpack.packb([1, 1, "too short"]),
                msgpack.packb([1, 1, "e", "not a seq", "room", "e", None, None, "reliable", None])]
        for message in junk:
            assert await client.publish(f"{{{prefix}:room}}:c", message) == 1
        assert await client.publish(f"{prefix}:node:{node.node_id}",
                                    msgpack.packb([1, 2, 42, "x", None, []])) == 1
        await adapter.publish(Envelope("room", "e", "after"))
        await node.wait_for(delivered=1)
        assert [envelope.data for envelope, _ in node.delivered] == ["after"]
        assert adapter.statistics()["undecodable"] == 7
        assert adapter.state is AdapterState.CONNECTED
    lines = [record for record in caplog.records if "cannot read" in record.getMessage()]
    assert len(lines) == 1, "at most one line every 10 seconds"


# --- the outgoing queue ---------------------------------------------------------------


async def test_a_full_queue_refuses_at_once_and_counts_what_it_refused(
    redis_server: RedisServer,
) -> None:
    prefix = new_prefix()
    a = RedisAdapter(redis_server.url, prefix=prefix, queue_size=3, **FAST)
    b = RedisAdapter(redis_server.url, prefix=prefix, **FAST)
    async with serving(a, b) as [_, (_, nb)]:
        await b.subscribe("q")
        # No checkpoint in between: the sending task cannot drain the queue.
        for n in range(3):
            assert a.publish_nowait(Envelope("q", "e", n)) is None
        with pytest.raises(Unavailable):
            a.publish_nowait(Envelope("q", "e", 3))
        with pytest.raises(Unavailable):
            a.signal_nowait(Signal(SignalKind.EVENT, "node-0", ["s", "e", None, "reliable",
                                                                  None]), node=nb.node_id)
        with pytest.raises(Unavailable):
            await a.publish(Envelope("q", "e", 4))
        assert a.statistics()["queued"] == 3
        assert a.statistics()["lost_sent"] == a.statistics()["messages_lost"] == 3
        await nb.wait_for(delivered=3)
        a.publish_nowait(Envelope("q", "e", 5))
        await nb.wait_for(delivered=4)
        assert [envelope.data for envelope, _ in nb.delivered] == [0, 1, 2, 5]


async def test_an_adapter_that_is_not_running_is_unavailable(redis_server: RedisServer) -> None:
    adapter = RedisAdapter(redis_server.url, prefix=new_prefix())
    assert adapter.state is AdapterState.IDLE
    with pytest.raises(Unavailable):
        adapter.publish_nowait(Envelope("r", "e"))
    with pytest.raises(Unavailable):
        await adapter.subscribe("r")
    with pytest.raises(Unavailable):
        await adapter.members("r")
    assert adapter.statistics()["lost_sent"] == 1


async def test_a_node_sends_no_signal_to_itself(redis_server: RedisServer) -> None:
    adapter = RedisAdapter(redis_server.url, prefix=new_prefix(), **FAST)
    async with serving(adapter) as [(_, node)]:
        to_me = Signal(SignalKind.EVENT, node.node_id, ["s", "e", None, "reliable", None])
        assert adapter.signal_nowait(to_me, node=node.node_id) is False
        assert await adapter.signal(to_me, node=node.node_id) == 0
        assert adapter.signal_nowait(to_me, node="elsewhere") is None


async def test_scripts_forgotten_by_redis_are_loaded_again(redis_server: RedisServer) -> None:
    prefix = new_prefix()
    a, b = (RedisAdapter(redis_server.url, prefix=prefix, **FAST) for _ in range(2))
    async with serving(a, b) as [_, (_, nb)], raw(redis_server) as client:
        first = await b.subscribe("r")
        await client.script_flush()
        a.publish_nowait(Envelope("r", "e", 1))
        await nb.wait_for(delivered=1)
        await client.script_flush()
        assert await a.position("r") == Position(first.epoch, 1)
        assert (await a.publish(Envelope("r", "e", 2))).position == Position(first.epoch, 2)
        assert a.statistics()["messages_lost"] == 0


# --- subscriptions ------------------------------------------------------------------------


async def test_a_room_is_unsubscribed_only_after_its_linger(redis_server: RedisServer) -> None:
    prefix = new_prefix()
    adapter = RedisAdapter(redis_server.url, prefix=prefix, **FAST)
    channel = f"{{{prefix}:lin}}:c"
    async with serving(adapter), raw(redis_server) as client:

        async def subscribers() -> int:
            return (await client.pubsub_numsub(channel))[channel.encode()]

        await adapter.subscribe("lin")
        adapter.unsubscribe_nowait("lin")
        await trio.sleep(0.1)
        assert await subscribers() == 1, "lingering"
        await adapter.subscribe("lin")  # a member came back: no churn
        await trio.sleep(0.3)
        assert await subscribers() == 1
        adapter.unsubscribe_nowait("lin")
        start = trio.current_time()
        with trio.fail_after(2):
            while await subscribers():  # noqa: ASYNC110 - polls Redis
                await trio.sleep(0.01)
        assert 0.15 < trio.current_time() - start < 0.5
        await until(lambda: adapter.statistics()["rooms"] == 0, timeout=1)


# --- presence -----------------------------------------------------------------------------


async def test_members_of_a_node_killed_with_sigkill_disappear_within_the_liveness_ttl(
    redis_server: RedisServer,
) -> None:
    prefix = new_prefix()
    script = Path(__file__).with_name("redis_node.py")
    process = await trio.lowlevel.open_process(
        [sys.executable, str(script), redis_server.url, prefix, "doomed", "room", "d1", "d2"],
        stdout=subprocess.PIPE)
    try:
        assert process.stdout is not None
        said = b""
        with trio.fail_after(10):
            while not said.endswith(b"\n"):
                said += await process.stdout.receive_some()
        assert said == b"ready\n"
        adapter = RedisAdapter(redis_server.url, prefix=prefix, **FAST)
        async with serving(adapter) as [(_, node)], raw(redis_server) as client:
            await adapter.subscribe("room")
            adapter.member_joined("room", "a1")
            node.rooms["room"] = ["a1"]
            await until_members(adapter, "room", {"a1", "d1", "d2"})
            assert (await adapter.publish(Envelope("room", "e"))).nodes == 2
            event = Signal(SignalKind.EVENT, node.node_id, ["d1", "e", None, "reliable", None])
            assert await adapter.signal(event, node="doomed") == 1

            process.send_signal(signal.SIGKILL)
            await process.wait()
            # Its subscriptions die with its connections: at once.
            with trio.fail_after(1):
                while await adapter.signal(event, node="doomed"):  # noqa: ASYNC110
                    await trio.sleep(0.005)
            assert (await adapter.publish(Envelope("room", "e"))).nodes == 1
            # Its members, when its liveness key expires (liveness_ttl=1.0 there).
            gone = await until_members(adapter, "room", {"a1"}, timeout=3)
            assert gone <= 1.0 + 0.1
            assert await client.hgetall(f"{{{prefix}:room}}:p") == {
                b"a1": node.node_id.encode()}, "and they were removed from Redis"
            assert await adapter.members("room") == [Member("a1", node.node_id)]
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_a_node_that_stops_takes_its_members_along_at_once(
    redis_server: RedisServer,
) -> None:
    prefix = new_prefix()
    a, b = (RedisAdapter(redis_server.url, prefix=prefix, **FAST) for _ in range(2))
    async with serving(a) as [(_, na)], raw(redis_server) as client:
        async with serving(b) as [(_, nb)]:
            await b.subscribe("room")
            b.member_joined("room", "b1")
            b.member_joined("room", "b2")
            b.member_left("room", "b2")
            await until_members(a, "room", {"b1"})
        # b's run() was cancelled: it said goodbye.
        assert await a.members("room") == []
        assert await client.exists([f"{prefix}:alive:{nb.node_id}"]) == 0
        assert await a.signal(Signal(SignalKind.EVENT, na.node_id, []), node=nb.node_id) == 0


async def test_a_node_whose_liveness_lapsed_writes_its_members_again(
    redis_server: RedisServer,
) -> None:
    prefix = new_prefix()
    adapter = RedisAdapter(redis_server.url, prefix=prefix, **FAST)
    async with serving(adapter) as [(_, node)], raw(redis_server) as client:
        adapter.member_joined("room", "s1")
        await until_members(adapter, "room", {"s1"})
        # As if the node had stalled past its TTL and another node cleaned up.
        await client.delete([f"{prefix}:alive:{node.node_id}", f"{{{prefix}:room}}:p"])
        assert await adapter.members("room") == []
        await until_members(adapter, "room", {"s1"}, timeout=1)


async def test_a_quiet_room_keeps_its_position_while_a_node_has_members_in_it(
    redis_server: RedisServer,
) -> None:
    adapter = RedisAdapter(redis_server.url, prefix=new_prefix(), **{**FAST, "room_ttl": 0.6})
    async with serving(adapter) as [(_, node)]:
        first = await adapter.subscribe("quiet")
        adapter.member_joined("quiet", "s1")
        await trio.sleep(1.5)  # no message, no join: only the node's refreshes
        assert await adapter.position("quiet") == first
        assert await adapter.members("quiet") == [Member("s1", node.node_id)]


# --- faults -------------------------------------------------------------------------------


async def _steady_traffic(adapter: RedisAdapter, room: str, count: int,
                          tally: dict[str, int]) -> None:
    for n in range(count):
        tally["attempted"] += 1
        try:
            adapter.publish_nowait(Envelope(room, "e", n))
        except Unavailable:
            tally["refused"] += 1
        await trio.sleep(0.002)


async def _settle(*adapters: RedisAdapter) -> None:
    """Wait until every queue and inbox is empty."""
    await until(lambda: all(adapter.statistics()["queued"] == adapter.statistics()["inbox"] == 0
                            for adapter in adapters))
    await trio.sleep(0.05)


def _check_accounting(a: RedisAdapter, b: RedisAdapter, nb: RecordingNode, numbered: int,
                      tally: dict[str, int], *, died_with_epoch: int = 0) -> None:
    """Everything a sent is delivered to b or counted: exact but for the messages on
    the wire when a connection broke (``unconfirmed``: they may have gone), and, when
    Redis died, for the last messages of the old epoch that Redis numbered but never
    handed to b (up to ``died_with_epoch``; no one can count them: b's
    ``epochs_lost`` says that the room lost an unknown number)."""
    sa, sb = a.statistics(), b.statistics()
    unconfirmed = int(sa["unconfirmed"])
    lost_sent, lost_received = int(sa["lost_sent"]), int(sb["lost_received"])
    assert tally["refused"] <= lost_sent
    assert numbered + lost_sent <= tally["attempted"]
    assert tally["attempted"] <= numbered + lost_sent + unconfirmed + died_with_epoch
    assert len(nb.delivered) + lost_received == numbered, "b's losses are counted exactly"


async def test_a_redis_restart_in_the_middle_of_traffic(
    own_redis: RedisServer, capsys: pytest.CaptureFixture[str],
) -> None:
    prefix = new_prefix()
    a, b = (RedisAdapter(own_redis.url, prefix=prefix, **FAST) for _ in range(2))
    tally = {"attempted": 0, "refused": 0}
    async with serving(a, b) as [_, (_, nb)], trio.open_nursery() as nursery:
        before = await b.subscribe("r")
        nursery.start_soon(_steady_traffic, a, "r", 500, tally)
        await until(lambda: len(nb.delivered) >= 100)
        killed_at = trio.current_time()
        await trio.to_thread.run_sync(own_redis.restart)  # SIGKILL, then start anew
        await until(lambda: nb.delivered[-1][1].epoch != before.epoch)
        back = trio.current_time() - killed_at
        await until(lambda: tally["attempted"] == 500, timeout=10)
        await _settle(a, b)
        after = await a.position("r")
        assert after.epoch != before.epoch, "Redis kept nothing: a new epoch"
        # Dense positions in each epoch, in order, once.
        epochs = [position.epoch for _, position in nb.delivered]
        assert epochs == sorted(epochs, key=[before.epoch, after.epoch].index)
        for epoch in (before.epoch, after.epoch):
            seqs = [position.seq for _, position in nb.delivered if position.epoch == epoch]
            assert seqs == sorted(set(seqs))
        last_old = max(p.seq for _, p in nb.delivered if p.epoch == before.epoch)
        numbered = (last_old - before.seq) + after.seq
        _check_accounting(a, b, nb, numbered, tally, died_with_epoch=5)
        sa, sb = a.statistics(), b.statistics()
        assert sa["reconnects"] == 1
        # b only receives: whether its command connection noticed the restart (a
        # reconnect) or only its subscription did (made again) depends on timing.
        assert int(sb["reconnects"]) + int(sb["resubscriptions"]) >= 1
        assert sb["epochs_lost"] == 1
        assert sb["lost_received"] == 0, "what b missed of the new epoch, read back from history"
        assert a.state is b.state is AdapterState.CONNECTED
        with capsys.disabled():
            print(f"\n[restart] delivery resumed {back:.3f} s after the kill;"
                  f" attempted {tally['attempted']}, refused at once {tally['refused']},"
                  f" delivered {len(nb.delivered)}; a: {dict(sa)}; b: {dict(sb)}")


async def test_subscriptions_killed_by_redis_are_made_again_at_once(
    own_redis: RedisServer, capsys: pytest.CaptureFixture[str],
) -> None:
    prefix = new_prefix()
    a, b = (RedisAdapter(own_redis.url, prefix=prefix, **FAST) for _ in range(2))
    tally = {"attempted": 0, "refused": 0}
    async with (serving(a, b) as [_, (_, nb)], raw(own_redis) as client,
                trio.open_nursery() as nursery):
        before = await b.subscribe("r")
        nursery.start_soon(_steady_traffic, a, "r", 300, tally)
        await until(lambda: len(nb.delivered) >= 50)
        assert await client.client_kill(type_=PureToken.PUBSUB) == 2
        killed_at = trio.current_time()
        count = len(nb.delivered)
        await until(lambda: len(nb.delivered) > count)
        back = trio.current_time() - killed_at
        await until(lambda: tally["attempted"] == 300, timeout=10)
        await _settle(a, b)
        after = await a.position("r")
        assert after.epoch == before.epoch
        seqs = [position.seq for _, position in nb.delivered]
        assert seqs == sorted(set(seqs))
        _check_accounting(a, b, nb, after.seq - before.seq, tally)
        sa, sb = a.statistics(), b.statistics()
        assert sa["resubscriptions"] == sb["resubscriptions"] == 1
        assert sa["reconnects"] == sb["reconnects"] == 0, "commands went on working"
        assert sa["lost_sent"] == sa["unconfirmed"] == 0, "so a sent everything"
        assert sb["epochs_lost"] == sb["lost_received"] == 0, "and b missed nothing"
        assert len(nb.delivered) == after.seq - before.seq
        with capsys.disabled():
            print(f"\n[client kill] delivery resumed {back:.3f} s after the kill; attempted"
                  f" {tally['attempted']}, delivered {len(nb.delivered)}; a: {dict(sa)};"
                  f" b: {dict(sb)}")


@pytest.mark.parametrize("history", [True, False], ids=["history", "no-history"])
async def test_a_deaf_subscription_is_found_by_its_probe_and_repaired(
    redis_server: RedisServer, capsys: pytest.CaptureFixture[str], history: bool,
) -> None:
    prefix = new_prefix()
    proxy = DeafeningProxy(redis_server.port)
    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.serve)
        a = RedisAdapter(redis_server.url, prefix=prefix, **FAST)
        b = RedisAdapter(proxy.url, prefix=prefix, **FAST)
        async with serving(a, b) as [(_, na), (_, nb)]:
            if not history:
                na.bounds = nb.bounds = None
            await b.subscribe("r")
            for n in range(3):
                await a.publish(Envelope("r", "e", n))
            await nb.wait_for(delivered=3)
            proxy.deafen()
            deafened_at = trio.current_time()
            for n in range(3, 8):
                # Redis still counts b: the process is healthy, its subscription deaf.
                assert (await a.publish(Envelope("r", "e", n))).nodes == 1
            await until(lambda: b.statistics()["resubscriptions"] == 1, timeout=3)
            assert b.statistics()["deaf_repairs"] == 1
            assert b.state is AdapterState.CONNECTED, "commands went on working meanwhile"
            repaired = trio.current_time() - deafened_at
            assert repaired < 0.3 + 0.3 + 0.3, "probe_interval + probe_timeout, and a margin"
            if history:
                # Read back from history once resubscribed, with no later message to
                # show the jump.
                await nb.wait_for(delivered=8)
            else:
                await until(lambda: nb.lost_reports == [("r", 5)])
            await a.publish(Envelope("r", "e", "heard"))
            await until(lambda: nb.delivered[-1][0].data == "heard")
            got = [envelope.data for envelope, _ in nb.delivered]
            seqs = [position.seq for _, position in nb.delivered]
            stats = b.statistics()
            if history:
                assert got == [*range(8), "heard"], "in order, once"
                assert seqs == list(range(1, 10))
                assert (stats["repaired"], stats["lost_received"]) == (5, 0)
                assert nb.lost_reports == []
            else:
                assert got == [0, 1, 2, "heard"]
                assert (stats["repaired"], stats["lost_received"]) == (0, 5), "counted"
            with capsys.disabled():
                print(f"\n[deaf] repaired {repaired:.3f} s after the subscription went deaf;"
                      f" b: {dict(stats)}")
        nursery.cancel_scope.cancel()


async def test_redis_down_at_start_then_up(own_redis: RedisServer) -> None:
    own_redis.stop()
    prefix = new_prefix()
    adapter = RedisAdapter(own_redis.url, prefix=prefix, **FAST)
    async with serving(adapter) as [(_, node)]:
        # run() started after its first failed attempt, and keeps trying.
        assert adapter.state is AdapterState.DISCONNECTED
        with pytest.raises(Unavailable):
            adapter.publish_nowait(Envelope("r", "e"))
        adapter.subscribe_nowait("r")
        adapter.member_joined("r", "s1")
        with pytest.raises(Unavailable):
            await adapter.subscribe("r")
        own_redis.start()
        await until(lambda: adapter.state is AdapterState.CONNECTED, timeout=3)
        await until_members(adapter, "r", {"s1"})
        adapter.publish_nowait(Envelope("r", "e", "first"))
        await node.wait_for(delivered=1)
        stats = adapter.statistics()
        assert stats["reconnects"] == 1
        assert stats["lost_sent"] == 1
        assert stats["rooms"] == 1


async def test_an_inbox_full_of_messages_drops_and_counts(redis_server: RedisServer) -> None:
    prefix = new_prefix()
    a = RedisAdapter(redis_server.url, prefix=prefix, **FAST)
    b = RedisAdapter(redis_server.url, prefix=prefix, inbox_size=1, **FAST)
    async with serving(a, b) as [_, (_, nb)], raw(redis_server) as client:
        await b.subscribe("r")
        async with client.pipeline(transaction=False) as pipe:
            for n in range(200):
                pipe.publish(f"{{{prefix}:r}}:c", msgpack.packb(
                    [1, 1, "E", n + 1, "r", "e", n, None, "volatile", None]))
        await until(lambda: len(nb.delivered) + int(b.statistics()["lost_received"]) == 200)
