"""The Lua scripts the adapter runs in Redis: each does at once, atomically, what
would race between nodes as separate commands.

The room scripts take the room's three keys: ``KEYS[1]`` its meta hash (``e`` the
epoch, ``s`` the last seq, ``b`` the bytes its history holds, ``k`` the seq of the
last message kept), ``KEYS[2]`` its history (a stream whose entry ids are
``<seq>-0``, with fields ``m`` the message's tail, ``t`` when it was kept in ms,
``n`` its size, ``i`` its publish key if it has one) and ``KEYS[3]`` its publish
keys (a hash ``<session>:<publish id> -> seq``, of the messages the history holds).
"""

from __future__ import annotations

import coredis
from coredis.commands import Script

__all__ = ["DROP_DEAD", "HISTORY", "POSITION", "PUBLISH", "SYNC_PRESENCE", "Scripts"]

# Where the room scripts start. ARGV[1]: an epoch to use if the room has none,
# ARGV[2]: the meta's TTL (ms).
_ROOM_EPOCH = b"""
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'e', epoch, 's', 0)
  -- What history is left (the meta expired, or was evicted, before it) is of a
  -- numbering that is gone: it must never be read as this epoch's.
  redis.call('DEL', KEYS[2], KEYS[3])
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""

# The history's helpers: the time, and trimming to the room's bounds.
_HISTORY = b"""
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Whether the history ends with the last message numbered, so that it has no hole
-- (a node that keeps no history for the room numbered some, or the history expired).
local function continuous(state)
  return tonumber(state[3]) == tonumber(state[1]) and redis.call('EXISTS', KEYS[2]) == 1
end

-- When the message at `seq` was kept (ms; 0 if it is not kept).
local function kept_since(seq)
  local id = seq .. '-0'
  local found = redis.call('XRANGE', KEYS[2], id, id)
  if #found == 0 then return 0 end
  local fields = found[1][2]
  for j = 1, #fields, 2 do
    if fields[j] == 't' then return tonumber(fields[j + 1]) end
  end
  return 0
end

-- Drops the oldest messages while the history holds more than `size` of them or
-- more than `max_bytes`, and those kept before `oldest` (ms), with their publish
-- keys. Takes and returns the bytes the history holds.
local function trim(bytes, size, max_bytes, oldest)
  local len = redis.call('XLEN', KEYS[2])
  -- As many as the count bound drops, and one more: where to stop is most often
  -- seen in the first read.
  local count = math.max(1, math.min(len - size, 256)) + 1
  while len > 0 do
    local entries = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', count)
    local ids, keys, stop = {}, {}, false
    for _, entry in ipairs(entries) do
      local at, n, key, fields = 0, 0, nil, entry[2]
      for j = 1, #fields, 2 do
        local name = fields[j]
        if name == 't' then at = tonumber(fields[j + 1])
        elseif name == 'n' then n = tonumber(fields[j + 1])
        elseif name == 'i' then key = fields[j + 1] end
      end
      if len <= size and bytes <= max_bytes and at >= oldest then
        stop = true
        break
      end
      ids[#ids + 1] = entry[1]
      -- Unless a later message took the key (this one had passed the age).
      if key and redis.call('HGET', KEYS[3], key) == string.match(entry[1], '^%d+') then
        keys[#keys + 1] = key
      end
      len, bytes = len - 1, bytes - n
    end
    if #ids > 0 then redis.call('XDEL', KEYS[2], unpack(ids)) end
    if #keys > 0 then redis.call('HDEL', KEYS[3], unpack(keys)) end
    if stop or #entries < count then break end
    count = math.min(count * 2, 257)
  end
  if len <= 0 then return 0 end
  return bytes
end
"""

#: Takes the room's next seq, keeps the message in the room's history when it has
#: one, and publishes it with its position written in. ARGV[3..5]: the room's
#: channel, the head and the tail of the message (see :mod:`.wire`); ARGV[6..9]: the
#: history's bounds (size, 0 when the room keeps none; bytes; age in ms) and the
#: message's publish key (``<session>:<publish id>``, or empty); ARGV[10..11] the
#: epoch and last seq the publishing node knows of the room. A publish key the
#: history holds already is a repeat: nothing is numbered, kept or sent. Returns
#: the position, how many subscribers received it, whether it was kept, whether it
#: was a repeat.
PUBLISH = _ROOM_EPOCH + _HISTORY + b"""
-- ARGV[10], ARGV[11]: the epoch and the last seq the publishing node was handed in
-- the room. Redis never numbers below a seq it handed out, unless it went back on
-- messages it had acknowledged (restored from an older snapshot, a failover to a
-- replica that lagged): then the room starts a new epoch, so that no seq is used
-- twice and clients that resume are told the epoch changed.
if ARGV[10] == epoch and tonumber(redis.call('HGET', KEYS[1], 's')) < tonumber(ARGV[11]) then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'e', epoch, 's', 0, 'b', 0, 'k', 0)
  redis.call('DEL', KEYS[2], KEYS[3])
end
local size = tonumber(ARGV[6])
if size == 0 then
  local seq = redis.call('HINCRBY', KEYS[1], 's', 1)
  local message = ARGV[4] .. cmsgpack.pack(epoch) .. cmsgpack.pack(seq) .. ARGV[5]
  return {epoch, seq, redis.call('PUBLISH', ARGV[3], message), 0, 0}
end
local max_bytes, age, key, tail = tonumber(ARGV[7]), tonumber(ARGV[8]), ARGV[9], ARGV[5]
local now = now_ms()
local state = redis.call('HMGET', KEYS[1], 's', 'b', 'k')
local bytes = tonumber(state[2]) or 0
if not continuous(state) then
  redis.call('DEL', KEYS[2], KEYS[3])
  bytes = 0
end
if key ~= '' then
  local first = redis.call('HGET', KEYS[3], key)
  -- Unless it is past the age (so trimmed below); the bounds of count and bytes
  -- held after the last message, as they do now.
  if first and kept_since(first) >= now - age then
    return {epoch, tonumber(first), 0, 1, 1}
  end
end
local seq = tonumber(state[1]) + 1
local id = string.format('%d-0', seq)
local fields = {'m', tail, 't', string.format('%d', now), 'n', #tail}
if key ~= '' then
  fields[7], fields[8] = 'i', key
end
-- Kept before it is numbered: whatever fails here leaves the seq untaken.
if type(redis.pcall('XADD', KEYS[2], id, unpack(fields))) == 'table' then
  -- An entry at or past this seq, of a numbering that is gone: start again.
  redis.call('DEL', KEYS[2], KEYS[3])
  bytes = 0
  redis.call('XADD', KEYS[2], id, unpack(fields))
end
if key ~= '' then redis.call('HSET', KEYS[3], key, seq) end
bytes = trim(bytes + #tail, size, max_bytes, now - age)
redis.call('HSET', KEYS[1], 's', seq, 'b', bytes, 'k', seq)
redis.call('PEXPIRE', KEYS[2], age)
redis.call('PEXPIRE', KEYS[3], age)
local message = ARGV[4] .. cmsgpack.pack(epoch) .. cmsgpack.pack(seq) .. tail
return {epoch, seq, redis.call('PUBLISH', ARGV[3], message), 1, 0}
"""

#: Reads the room's history: ARGV[3..5] the epoch asked for, the seq after which to
#: read, how many messages at most; ARGV[6..8] the history's bounds (as PUBLISH).
#: Returns the position, the seq of the oldest message kept (the last seq + 1 when
#: none is), and ``seq, tail`` of the messages read (none when the epoch asked for
#: is not the room's).
HISTORY = _ROOM_EPOCH + _HISTORY + b"""
local state = redis.call('HMGET', KEYS[1], 's', 'b', 'k')
local last = tonumber(state[1])
local first, messages = last + 1, {}
if continuous(state) then
  local now = now_ms()
  local bytes = trim(tonumber(state[2]) or 0, tonumber(ARGV[6]), tonumber(ARGV[7]),
                     now - tonumber(ARGV[8]))
  redis.call('HSET', KEYS[1], 'b', bytes)
  local oldest = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
  if #oldest > 0 then first = tonumber(string.match(oldest[1][1], '^%d+')) end
  local limit = tonumber(ARGV[5])
  if epoch == ARGV[3] and limit > 0 then
    local start = string.format('%d-0', tonumber(ARGV[4]) + 1)
    for _, entry in ipairs(redis.call('XRANGE', KEYS[2], start, '+', 'COUNT', limit)) do
      local fields = entry[2]
      for j = 1, #fields, 2 do
        if fields[j] == 'm' then
          messages[#messages + 1] = tonumber(string.match(entry[1], '^%d+'))
          messages[#messages + 1] = fields[j + 1]
        end
      end
    end
  end
end
return {epoch, last, first, messages}
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

    __slots__ = ("drop_dead", "history", "position", "publish", "sync")

    def __init__(self) -> None:
        self.publish = Script[bytes](script=PUBLISH)
        self.position = Script[bytes](script=POSITION)
        self.history = Script[bytes](script=HISTORY)
        self.sync = Script[bytes](script=SYNC_PRESENCE)
        self.drop_dead = Script[bytes](script=DROP_DEAD)

    async def load(self, client: coredis.Redis[bytes]) -> None:
        """Load every script (again: Redis forgets them on ``SCRIPT FLUSH``)."""
        for script in (self.publish, self.position, self.history, self.sync, self.drop_dead):
            await client.script_load(script.script)
