"""A node on Redis in a process of its own, for a test to kill with SIGKILL.

    python redis_node.py URL PREFIX NODE_ID ROOM SID...

It joins the sids to the room, prints ``ready`` once Redis lists them, and serves
until killed.
"""

from __future__ import annotations

import sys

import trio

from eventbus.adapters.conformance import RecordingNode
from eventbus.adapters.redis import RedisAdapter


async def main(url: str, prefix: str, node_id: str, room: str, *sids: str) -> None:
    adapter = RedisAdapter(url, prefix=prefix, liveness_ttl=1.0, refresh_interval=0.25)
    node = RecordingNode(node_id)
    node.rooms[room] = list(sids)
    async with trio.open_nursery() as nursery:
        await nursery.start(adapter.run, node)
        await adapter.subscribe(room)
        for sid in sids:
            adapter.member_joined(room, sid)
        while len(await adapter.members(room)) < len(sids):  # noqa: ASYNC110 - polls Redis
            await trio.sleep(0.01)
        print("ready", flush=True)


if __name__ == "__main__":
    trio.run(main, *sys.argv[1:])
