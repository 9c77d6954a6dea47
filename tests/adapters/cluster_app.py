"""The app each node of the cluster tests serves: open rooms, and handlers that let
a test client drive the bus's cross-node API from inside one node.

Its adapter comes from the environment (set by the test), so that the test can use
short liveness bounds: EVENTBUS_TEST_REDIS (URL) and EVENTBUS_TEST_PREFIX.
"""

from __future__ import annotations

import os
from typing import Any

from eventbus import Connection, EventBus, RequestError
from eventbus.adapters.redis import RedisAdapter

bus = EventBus(
    open_rooms=True,
    adapter=RedisAdapter(
        os.environ["EVENTBUS_TEST_REDIS"], prefix=os.environ["EVENTBUS_TEST_PREFIX"],
        liveness_ttl=2.0, refresh_interval=0.5, linger=0.5,
    ),
)


@bus.on("call_room")
async def call_room(sock: Connection, data: Any) -> Any:
    results = await bus.call(data["event"], None, to_room=data["room"],
                             timeout=data["timeout"])
    return {
        "answers": dict(results.answers),
        "errors": {sid: error.code if isinstance(error, RequestError) else "closed"
                   for sid, error in results.errors.items()},
        "timed_out": sorted(results.timed_out),
        "missing_nodes": list(results.missing_nodes),
    }


@bus.on("members")
async def members(sock: Connection, room: str) -> Any:
    return sorted([member.sid, member.node] for member in await bus.all_members(room))


@bus.on("tell")
async def tell(sock: Connection, data: Any) -> int:
    return bus.emit(data["event"], data["data"], to_sid=data["sid"])


@bus.on("node")
async def node(sock: Connection, data: Any) -> str:
    return bus.node_id
