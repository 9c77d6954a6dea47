"""The Lua scripts the adapter runs in Redis: each does at once, atomically, what
would race between nodes as separate commands."""

from __future__ import annotations

import coredis
from coredis.commands import Script

__all__ = ["DROP_DEAD", "POSITION", "PUBLISH", "SYNC_PRESENCE", "Scripts"]

# Where PUBLISH and POSITION start. KEYS[1]: the room's meta hash. ARGV[1]: an epoch
# to use if the room has none, ARGV[2]: the meta's TTL (ms).
_ROOM_EPOCH = b"""
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'e', epoch, 's', 0)
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""

#: Takes the room's next seq and publishes the message with its position written in.
#: ARGV[3..5]: the room's channel, the head and the tail of the message (see
#: :mod:`.wire`). Returns the position and how many subscribers received it.
PUBLISH = _ROOM_EPOCH + b"""
local seq = redis.call('HINCRBY', KEYS[1], 's', 1)
local message = ARGV[4] .. cmsgpack.pack(epoch) .. cmsgpack.pack(seq) .. ARGV[5]
return {epoch, seq, redis.call('PUBLISH', ARGV[3], message)}
"""

#: Returns the room's position (its epoch created if it is new).
POSITION = _ROOM_EPOCH + b"""
return {epoch, tonumber(redis.call('HGET', KEYS[1], 's'))}
"""

#: KEYS[1]: a room's members hash. ARGV: a node, the TTL (ms), that node's sids in
#: the room: afterwards the hash holds exactly these sids for that node.
SYNC_PRESENCE = b"""
local keep = {}
for i = 3, #ARGV do keep[ARGV[i]] = true end
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if all[i + 1] == ARGV[1] and not keep[all[i]] then redis.call('HDEL', KEYS[1], all[i]) end
end
for i = 3, #ARGV do redis.call('HSET', KEYS[1], ARGV[i], ARGV[1]) end
if #ARGV > 2 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

#: KEYS[1]: a room's members hash; KEYS[2..]: liveness keys of the nodes ARGV[1..].
#: Removes the members of the nodes whose key is gone, checked atomically with the
#: removal, so that a node coming back (its key first, then its members) keeps them.
#: (On a Redis Cluster the liveness keys live in other slots: future work.)
DROP_DEAD = b"""
local dead, any = {}, false
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then dead[ARGV[i - 1]] = true; any = true end
end
if not any then return 0 end
local all, removed = redis.call('HGETALL', KEYS[1]), 0
for i = 1, #all, 2 do
  if dead[all[i + 1]] then redis.call('HDEL', KEYS[1], all[i]); removed = removed + 1 end
end
return removed
"""


class Scripts:
    """The scripts as coredis runs them (``EVALSHA``, once :meth:`load` loaded them)."""

    __slots__ = ("drop_dead", "position", "publish", "sync")

    def __init__(self) -> None:
        self.publish = Script[bytes](script=PUBLISH)
        self.position = Script[bytes](script=POSITION)
        self.sync = Script[bytes](script=SYNC_PRESENCE)
        self.drop_dead = Script[bytes](script=DROP_DEAD)

    async def load(self, client: coredis.Redis[bytes]) -> None:
        """Load every script (again: Redis forgets them on ``SCRIPT FLUSH``)."""
        for script in (self.publish, self.position, self.sync, self.drop_dead):
            await client.script_load(script.script)
