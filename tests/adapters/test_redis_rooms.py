"""A node in several rooms whose subscription breaks reads all their positions at once
(one pipeline) and counts, per room, what it missed meanwhile."""

from __future__ import annotations

import trio
from coredis.tokens import PureToken

from eventbus.adapters import Envelope
from eventbus.adapters.redis import RedisAdapter

from .conftest import RedisServer
from .test_redis import FAST, new_prefix, raw, serving, until


async def test_a_resubscription_counts_what_each_room_missed(own_redis: RedisServer) -> None:
    prefix = new_prefix()
    a, b = (RedisAdapter(own_redis.url, prefix=prefix, **FAST) for _ in range(2))
    rooms = ["r1", "r2", "r3"]
    with trio.fail_after(30):
        async with serving(a, b) as [_, (_, nb)], raw(own_redis) as client:
            for room in rooms:
                await b.subscribe(room)
                await a.publish(Envelope(room, "e", 0))
            await until(lambda: len(nb.delivered) == 3)
            # b's subscription dies; messages published before it is made again are
            # missed, and counted per room from the positions read all at once.
            assert await client.client_kill(type_=PureToken.PUBSUB) >= 1
            for room in rooms:
                await a.publish(Envelope(room, "e", 1))
            await until(lambda: int(b.statistics()["resubscriptions"]) >= 1, timeout=10)
            for room in rooms:
                await a.publish(Envelope(room, "e", 2))
            await until(lambda: sum(1 for e, _ in nb.delivered if e.data == 2) == 3, timeout=10)
            stats = b.statistics()
            missed = sum(1 for room in rooms
                         if not any(e.room == room and e.data == 1 for e, _ in nb.delivered))
            assert int(stats["lost_received"]) == missed
