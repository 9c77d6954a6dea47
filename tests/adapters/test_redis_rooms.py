"""A node in several rooms whose subscription breaks reads all their positions at once
(one pipeline) and, per room, reads back from history what it missed meanwhile, or
counts it when the room keeps no history."""

from __future__ import annotations

import pytest
import trio
from coredis.tokens import PureToken

from eventbus.adapters import Envelope
from eventbus.adapters.redis import RedisAdapter

from .conftest import RedisServer
from .test_redis import FAST, new_prefix, raw, serving, until


@pytest.mark.parametrize("history", [True, False], ids=["history", "no-history"])
async def test_a_resubscription_repairs_or_counts_what_each_room_missed(
    own_redis: RedisServer, history: bool,
) -> None:
    prefix = new_prefix()
    a, b = (RedisAdapter(own_redis.url, prefix=prefix, **FAST) for _ in range(2))
    rooms = ["r1", "r2", "r3"]
    with trio.fail_after(30):
        async with serving(a, b) as [(_, na), (_, nb)], raw(own_redis) as client:
            if not history:
                na.bounds = nb.bounds = None
            for room in rooms:
                await b.subscribe(room)
                await a.publish(Envelope(room, "e", 0))
            await until(lambda: len(nb.delivered) == 3)
            # b's subscription dies; messages published before it is made again are
            # missed, and found per room from the positions read all at once.
            assert await client.client_kill(type_=PureToken.PUBSUB) >= 1
            for room in rooms:
                await a.publish(Envelope(room, "e", 1))
            await until(lambda: int(b.statistics()["resubscriptions"]) >= 1, timeout=10)
            for room in rooms:
                await a.publish(Envelope(room, "e", 2))
            await until(lambda: sum(1 for e, _ in nb.delivered if e.data == 2) == 3, timeout=10)
            stats = b.statistics()
            for room in rooms:
                got = [e.data for e, _ in nb.delivered if e.room == room]
                assert got in (([0, 1, 2],) if history else ([0, 1, 2], [0, 2])), "in order, once"
            missed = sum(1 for room in rooms
                         if not any(e.room == room and e.data == 1 for e, _ in nb.delivered))
            if history:
                assert (missed, stats["lost_received"]) == (0, 0)
                assert stats["repaired"] <= 3
            else:
                assert int(stats["lost_received"]) == missed
                assert sorted(nb.lost_reports) == sorted(
                    (room, 1) for room in rooms
                    if not any(e.room == room and e.data == 1 for e, _ in nb.delivered))
