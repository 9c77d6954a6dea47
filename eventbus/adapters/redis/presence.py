"""Presence: this node's members of each room, written to Redis, and its liveness
key, without which other nodes leave its members out."""

from __future__ import annotations

from collections.abc import Mapping

import coredis
import trio

from ..base import Member
from .keys import Keys
from .logs import logger
from .scripts import Scripts

__all__ = ["Presence"]


class Presence:
    """This node's members by room, and the changes not yet written to Redis.

    Args:
        room_ms: How long a room's members live after their last use (ms).
        liveness_ms: How long a node's liveness key lives (ms).
        refresh_interval: Seconds between refreshes of the liveness key.
    """

    def __init__(self, keys: Keys, scripts: Scripts, *, room_ms: int, liveness_ms: int,
                 refresh_interval: float) -> None:
        self._keys = keys
        self._scripts = scripts
        self._room_ms = room_ms
        self._liveness_ms = liveness_ms
        self._refresh_interval = refresh_interval
        self._members: dict[str, set[str]] = {}
        self._changes: dict[str, dict[str, bool]] = {}
        self._changed = trio.Event()

    def joined(self, room: str, sid: str) -> None:
        self._members.setdefault(room, set()).add(sid)
        self._changes.setdefault(room, {})[sid] = True
        self._changed.set()

    def left(self, room: str, sid: str) -> None:
        self._members.get(room, set()).discard(sid)
        self._changes.setdefault(room, {})[sid] = False
        self._changed.set()

    async def members(self, client: coredis.Redis[bytes], room: str) -> list[Member]:
        """Every connection in ``room`` on a living node. Those of nodes whose
        liveness key expired are left out, and removed from Redis."""
        key = self._keys.room(room, "p")
        entries = {sid.decode(): node.decode()
                   for sid, node in (await client.hgetall(key)).items()}
        nodes = sorted(set(entries.values()))
        if not nodes:
            return []
        alive = await client.mget([self._keys.alive(node) for node in nodes])
        dead = {node for node, value in zip(nodes, alive, strict=True) if value is None}
        if dead:
            await self._scripts.drop_dead(
                keys=[key, *(self._keys.alive(node) for node in sorted(dead))],
                args=sorted(dead), client=client)
        return [Member(sid, node) for sid, node in entries.items() if node not in dead]

    async def arrive(self, node_id: str, client: coredis.Redis[bytes]) -> None:
        """A new connection: write this node's liveness key, then its members."""
        await client.set(self._keys.alive(node_id), b"1", px=self._liveness_ms)
        await self._restore(node_id, client)

    async def leave(self, node_id: str, client: coredis.Redis[bytes]) -> None:
        """On a normal stop: take this node's liveness and members out of Redis."""
        await client.delete([self._keys.alive(node_id)])
        await client.script_load(self._scripts.sync.script)
        await self._sync(node_id, client, {room: set() for room in self._members})

    async def _sync(self, node_id: str, client: coredis.Redis[bytes],
                    rooms: Mapping[str, set[str]]) -> None:
        """Make Redis hold exactly ``rooms``' members of this node."""
        if not rooms:
            return
        sha = self._scripts.sync.sha
        async with client.pipeline(transaction=False) as pipe:
            for room, sids in rooms.items():
                pipe.evalsha(sha, keys=[self._keys.room(room, "p")],
                             args=[node_id, self._room_ms, *sorted(sids)])

    async def _restore(self, node_id: str, client: coredis.Redis[bytes]) -> None:
        self._changes.clear()
        await self._sync(node_id, client, dict(self._members))
        self._forget_empty_rooms(list(self._members))

    def _forget_empty_rooms(self, rooms: list[str]) -> None:
        for room in rooms:
            if not self._members.get(room, True) and room not in self._changes:
                del self._members[room]

    async def changes_loop(self, node_id: str, client: coredis.Redis[bytes]) -> None:
        """Write joins and leaves, batched: whatever changed while the last batch was sent."""
        while True:
            while not self._changes:
                self._changed = trio.Event()
                await self._changed.wait()
            changes, self._changes = self._changes, {}
            async with client.pipeline(transaction=False) as pipe:
                for room, change in changes.items():
                    key = self._keys.room(room, "p")
                    joined = {sid: node_id for sid, there in change.items() if there}
                    left = [sid for sid, there in change.items() if not there]
                    if joined:
                        pipe.hset(key, joined)
                    if left:
                        pipe.hdel(key, left)
                    pipe.pexpire(key, self._room_ms)
            self._forget_empty_rooms(list(changes))

    async def liveness_loop(self, node_id: str, client: coredis.Redis[bytes]) -> None:
        """Refresh this node's liveness key, and keep its rooms' keys alive."""
        key = self._keys.alive(node_id)
        touch_every = self._room_ms / 1000 / 4
        next_touch = trio.current_time() + touch_every
        while True:
            await trio.sleep(self._refresh_interval)
            if trio.current_time() >= next_touch:
                # Quiet rooms keep their position and members while this node is in them.
                next_touch += touch_every
                async with client.pipeline(transaction=False) as pipe:
                    for room in self._members:
                        pipe.pexpire(self._keys.room(room, "p"), self._room_ms)
                        pipe.pexpire(self._keys.room(room, "m"), self._room_ms)
            before = await client.set(key, b"1", px=self._liveness_ms, get=True)
            if before is None:
                # Too long without a refresh: other nodes may have removed this
                # node's members; write them again.
                logger.warning("this node's liveness key in Redis had expired; its members"
                               " were not counted for a while")
                await self._restore(node_id, client)
