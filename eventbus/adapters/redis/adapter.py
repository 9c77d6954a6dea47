"""The Redis adapter (see the package docs, :mod:`eventbus.adapters.redis`)."""

from __future__ import annotations

import contextlib
import logging
import math
import random
import re
import secrets
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import anyio
import coredis
import msgpack
import trio
from coredis.commands import Script
from coredis.exceptions import NoScriptError, RedisError, ResponseError
from coredis.patterns.pubsub import PubSub
from coredis.retry import NoRetryPolicy

from ...errors import Unavailable
from ...protocol import Position
from ..base import Adapter, AdapterState, Envelope, Member, Node, Published, Signal, SignalKind

__all__ = ["RedisAdapter"]

logger = logging.getLogger("eventbus.adapters.redis")

#: The version of the messages between nodes: the first value of each.
WIRE_VERSION = 1
_ROOM, _SIGNAL, _PROBE = 1, 2, 3
# msgpack: an array of 10, the version, the kind; the script adds epoch and seq,
# the node the rest: [1, ROOM, epoch, seq, room, event, data, sender, delivery, key].
_ROOM_HEAD = b"\x9a" + msgpack.packb(WIRE_VERSION) + msgpack.packb(_ROOM)

# KEYS[1]: the room's meta hash. ARGV: the room's channel, an epoch to use if the
# room has none, the meta's TTL (ms), the head and the tail of the message.
_PUBLISH = b"""
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[2]
  redis.call('HSET', KEYS[1], 'e', epoch, 's', 0)
end
local seq = redis.call('HINCRBY', KEYS[1], 's', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
local message = ARGV[4] .. cmsgpack.pack(epoch) .. cmsgpack.pack(seq) .. ARGV[5]
return {epoch, seq, redis.call('PUBLISH', ARGV[1], message)}
"""

# KEYS[1]: the room's meta hash. ARGV: an epoch to use if it has none, the TTL (ms).
_POSITION = b"""
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'e', epoch, 's', 0)
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {epoch, tonumber(redis.call('HGET', KEYS[1], 's'))}
"""

# KEYS[1]: a room's members hash. ARGV: a node, the TTL (ms), that node's sids in the
# room: afterwards the hash holds exactly these sids for that node.
_SYNC_PRESENCE = b"""
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

# KEYS[1]: a room's members hash; KEYS[2..]: liveness keys of the nodes ARGV[1..].
# Removes the members of the nodes whose key is gone, checked atomically with the
# removal, so that a node coming back (its key first, then its members) keeps them.
# (On a Redis Cluster the liveness keys live in other slots: future work.)
_DROP_DEAD = b"""
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

_PREFIX = re.compile(r"[A-Za-z0-9_.-]+")
# How many queued messages one pipeline carries at most.
_BATCH = 512
# At most one log line per kind of trouble this often (seconds).
_LOG_EVERY = 10.0


class _Lost(Exception):
    """The connection, or its subscription, must be made again."""


# What coredis raises when Redis cannot be reached or answered too late (and, from
# its own tasks, when their connection closed under them).
_REDIS_ERRORS = (RedisError, OSError, TimeoutError, anyio.ClosedResourceError,
                 anyio.BrokenResourceError, anyio.EndOfStream)


class _Undecodable(ValueError):
    pass


def _encode_signal(signal: Signal) -> bytes:
    data: bytes = msgpack.packb([WIRE_VERSION, _SIGNAL, int(signal.kind), signal.sender,
                                 signal.room, list(signal.body)])
    return data


def _decode(raw: bytes) -> tuple[Envelope, Position] | Signal | str:
    """A message from Redis: a room message, a signal, or a probe's token.

    Raises:
        _Undecodable: not a message this version understands.
    """
    try:
        wire = msgpack.unpackb(raw, raw=False, use_list=True, strict_map_key=False)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise _Undecodable(f"not msgpack ({exc})") from None
    if not isinstance(wire, list) or len(wire) < 2:
        raise _Undecodable("not a [version, kind, ...] array")
    if wire[0] != WIRE_VERSION:
        raise _Undecodable(f"version {wire[0]!r}; this node reads version {WIRE_VERSION}")
    # Values past the ones read here (a later revision of version 1) are ignored.
    kind = wire[1]
    if kind == _ROOM and len(wire) >= 10:
        epoch, seq, room, event, data, sender, delivery, key = wire[2:10]
        if (isinstance(epoch, str) and type(seq) is int and isinstance(room, str)
                and isinstance(event, str) and isinstance(sender, str | None)
                and isinstance(delivery, str) and isinstance(key, str | None)):
            return Envelope(room, event, data, sender, delivery, key), Position(epoch, seq)
    elif kind == _SIGNAL and len(wire) >= 6:
        signal_kind, sender, room, body = wire[2:6]
        if (signal_kind in _SIGNAL_KINDS and isinstance(sender, str)
                and isinstance(room, str | None) and isinstance(body, list)):
            return Signal(SignalKind(signal_kind), sender, body, room)
    elif kind == _PROBE and len(wire) >= 3 and isinstance(wire[2], str):
        return str(wire[2])
    raise _Undecodable(f"kind {kind!r} with {len(wire)} values")


_SIGNAL_KINDS = frozenset(int(kind) for kind in SignalKind)

_Incoming = tuple[Envelope, Position] | Signal


class _Reply:
    """Where the sending task puts the result of a message that somebody awaits."""

    __slots__ = ("done", "error", "value")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.value: Any = None
        self.error: str | None = None

    def set(self, value: Any) -> None:
        self.value = value
        self.done.set()

    def fail(self, why: str) -> None:
        self.error = why
        self.done.set()

    async def wait(self) -> Any:
        await self.done.wait()
        if self.error is not None:
            raise Unavailable(self.error)
        return self.value


class _Outgoing:
    """A queued message: a room message for the publish script (``meta`` set, the
    message's tail in ``payload``) or a plain PUBLISH of ``payload`` to ``channel``."""

    __slots__ = ("channel", "meta", "payload", "reply")

    def __init__(self, channel: str, payload: bytes, meta: str | None,
                 reply: _Reply | None) -> None:
        self.channel = channel
        self.payload = payload
        self.meta = meta
        self.reply = reply


class _Room:
    """A room this node is subscribed to, or lingers in."""

    __slots__ = ("epoch", "linger_until", "refund", "seq")

    def __init__(self) -> None:
        # None while the node has members in it; then, when to unsubscribe.
        self.linger_until: float | None = None
        # The last position this node had, to count what it missed.
        self.epoch: str | None = None
        self.seq = 0
        # Messages counted as missed at a resubscription that may still arrive.
        self.refund = 0


class _Session:
    """One connection to Redis: a client for commands, and a subscription (which
    may be repaired within the session)."""

    def __init__(self, client: coredis.Redis[bytes], node_channel: str) -> None:
        self.client = client
        self.node_channel = node_channel
        #: Channels whose subscription Redis confirmed.
        self.subscribed: set[str] = set()
        #: Set (and replaced) whenever subscriptions are wanted or were made.
        self.changed = trio.Event()
        self.closed = False
        self.in_flight: list[_Outgoing] = []
        #: Held while a batch is sent and while subscriptions change, so that the
        #: adapter knows for each message whether Redis counted this node in its
        #: receivers (a signal to a room must not count its sender).
        self.lock = trio.Lock()
        self.last_received = trio.current_time()
        self.probe: tuple[str, trio.Event] | None = None

    def notify(self) -> None:
        changed, self.changed = self.changed, trio.Event()
        changed.set()


class _LogBudget:
    """At most one line every ``_LOG_EVERY`` seconds, saying how many were left out."""

    def __init__(self) -> None:
        self._next = -math.inf
        self._quiet = 0

    def warning(self, message: str, *args: object) -> None:
        now = trio.current_time()
        if now < self._next:
            self._quiet += 1
            return
        if self._quiet:
            message += f" ({self._quiet} more like it since the last line)"
        logger.warning(message, *args)
        self._next, self._quiet = now + _LOG_EVERY, 0


class RedisAdapter(Adapter):
    """A node of a bus whose nodes meet on one Redis (see the module docs).

    Args:
        url: The Redis server, as ``redis://[:password@]host:port/db``,
            ``rediss://...`` (TLS) or ``unix:///path/to.sock``.
        prefix: Starts every key and channel name: letters, digits, ``_``, ``.``
            and ``-``. Buses with different prefixes on one Redis do not see each
            other.
        linger: Seconds a node stays subscribed to a room after its last member left.
        liveness_ttl: Seconds a node's liveness key lives: how long the members of a
            node that died may still be counted.
        refresh_interval: Seconds between refreshes of the liveness key.
        probe_interval: Seconds without any message from Redis before a probe.
        probe_timeout: Seconds a probe may take to come back.
        queue_size: Messages the outgoing queue holds at most.
        inbox_size: Messages received from Redis, not yet handed to the node, at most.
        room_ttl: Seconds a room's position and members live after their last use.
        command_timeout: Seconds Redis may take to answer a command.
        connect_timeout: Seconds a connection attempt may take.
        backoff: The first and the longest pause between connection attempts.

    Raises:
        ValueError: a bad prefix, or a refresh interval not shorter than the TTL.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "eventbus",
        linger: float = 3.0,
        liveness_ttl: float = 10.0,
        refresh_interval: float = 3.0,
        probe_interval: float = 5.0,
        probe_timeout: float = 2.0,
        queue_size: int = 10_000,
        inbox_size: int = 10_000,
        room_ttl: float = 30 * 86400.0,
        command_timeout: float = 5.0,
        connect_timeout: float = 2.0,
        backoff: tuple[float, float] = (0.1, 5.0),
    ) -> None:
        if not _PREFIX.fullmatch(prefix):
            raise ValueError(f"prefix {prefix!r}: use letters, digits, '_', '.' and '-'")
        if refresh_interval >= liveness_ttl:
            raise ValueError("refresh_interval must be shorter than liveness_ttl")
        self.url = url
        self.prefix = prefix
        self._linger = linger
        self._liveness_ms = max(1, round(liveness_ttl * 1000))
        self._refresh_interval = refresh_interval
        self._probe_interval = probe_interval
        self._probe_timeout = probe_timeout
        self._queue_size = queue_size
        self._inbox_size = inbox_size
        self._room_ms = max(1, round(room_ttl * 1000))
        self._command_timeout = command_timeout
        self._connect_timeout = connect_timeout
        self._backoff = backoff
        parts = urlsplit(url)
        # For the log: never the password.
        self._where = (f"{parts.hostname}:{parts.port or 6379}{parts.path}" if parts.hostname
                       else parts.path)

        self._node: Node | None = None
        self._state = AdapterState.IDLE
        # Whether Redis holds this node's liveness key and members (from this run).
        self._present = False
        self._session: _Session | None = None
        self._queue: deque[_Outgoing] = deque()
        self._queued = trio.Event()
        self._rooms: dict[str, _Room] = {}
        # This node's members by room, and the changes not yet written to Redis.
        self._members: dict[str, set[str]] = {}
        self._presence: dict[str, dict[str, bool]] = {}
        self._presence_changed = trio.Event()
        self._inbox: trio.MemorySendChannel[_Incoming] | None = None
        self._scripts = {name: Script[bytes](script=text) for name, text in (
            ("publish", _PUBLISH), ("position", _POSITION), ("sync", _SYNC_PRESENCE),
            ("drop_dead", _DROP_DEAD))}
        self._log_lost = _LogBudget()
        self._log_refused = _LogBudget()
        self._log_subscription = _LogBudget()
        self._log_undecodable = _LogBudget()
        self._counters = dict.fromkeys((
            "reconnects", "resubscriptions", "lost_sent", "unconfirmed", "lost_received",
            "epochs_lost", "undecodable", "deaf_repairs", "probe_lag_us"), 0)

    def __repr__(self) -> str:
        node = self._node.node_id if self._node is not None else "unstarted"
        return f"<RedisAdapter {node} {self.prefix!r} at {self._where}: {self._state.value}>"

    # --- names ------------------------------------------------------------------------

    def _key(self, room: str, kind: str) -> str:
        """``kind``: ``m`` the position, ``p`` the members, ``c`` the channel."""
        return f"{{{self.prefix}:{room}}}:{kind}"

    def _node_channel(self, node: str) -> str:
        return f"{self.prefix}:node:{node}"

    def _alive_key(self, node: str) -> str:
        return f"{self.prefix}:alive:{node}"

    # --- state ------------------------------------------------------------------------

    @property
    def state(self) -> AdapterState:
        return self._state

    def statistics(self) -> Mapping[str, int | str]:
        """Counters for monitoring:

        * ``state``, ``node``: :attr:`state`, and this node's id;
        * ``reconnects``: connections made after the first;
        * ``resubscriptions``: subscriptions repaired within a connection;
        * ``messages_lost``: ``lost_sent`` plus ``lost_received``;
        * ``lost_sent``: messages refused at once (queue full, not connected),
          refused by Redis, or still queued when the connection broke;
        * ``unconfirmed``: messages on the wire when the connection broke (they may
          have been delivered, or not);
        * ``lost_received``: messages of this node's rooms that it did not get
          (missed while it was not subscribed, or dropped with its inbox full);
        * ``epochs_lost``: rooms whose epoch changed while this node was away, so
          that what it missed cannot be counted;
        * ``undecodable``: messages from other nodes that this version cannot read;
        * ``deaf_repairs``: repairs because a probe did not come back;
        * ``probe_lag_us``: the round trip of the last probe, in microseconds;
        * ``queued``, ``inbox``, ``rooms``: messages waiting to go, messages waiting
          for the node, rooms subscribed.
        """
        counters = self._counters
        session = self._session
        return {
            "state": self._state.value,
            "node": self._node.node_id if self._node is not None else "",
            **counters,
            "messages_lost": counters["lost_sent"] + counters["lost_received"],
            "queued": len(self._queue),
            "inbox": self._inbox.statistics().current_buffer_used if self._inbox else 0,
            "rooms": max(0, len(session.subscribed) - 1) if session is not None else 0,
        }

    @contextlib.contextmanager
    def _unavailable_on_redis_errors(self) -> Iterator[None]:
        # The boundary between coredis and the callers of the adapter.
        try:
            yield
        except ResponseError as exc:
            self._log_refused.warning("Redis refused a command: %s", exc)
            raise Unavailable("Redis refused the request") from exc
        except _REDIS_ERRORS as exc:
            raise Unavailable("the bus cannot reach its other nodes now") from exc

    def _connected(self) -> _Session:
        session = self._session
        if session is None or self._state is not AdapterState.CONNECTED:
            raise Unavailable("the bus cannot reach its other nodes now")
        return session

    # --- running ----------------------------------------------------------------------

    async def run(
        self, node: Node, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        if self._node is not None:
            raise RuntimeError("this adapter already serves a node")
        self._node = node
        send, receive = trio.open_memory_channel[_Incoming](self._inbox_size)
        self._inbox = send
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._hand_over, node, receive)
                await self._keep_connected(node, task_status)
        finally:
            present, self._present = self._present, False
            self._state = AdapterState.IDLE
            self._fail_queue()
            if present:
                with trio.CancelScope(shield=True), trio.move_on_after(self._command_timeout):
                    await self._goodbye(node)
            self._node = None
            self._inbox = None

    async def _keep_connected(self, node: Node, task_status: trio.TaskStatus[None]) -> None:
        started = False
        failures = 0
        down_since: float | None = None
        lost_before = 0

        def connected() -> None:
            nonlocal started, failures, down_since
            if down_since is not None:
                self._counters["reconnects"] += 1
                logger.warning("reconnected to Redis at %s after %.2f s; messages to other"
                               " nodes lost meanwhile: %d", self._where,
                               trio.current_time() - down_since,
                               self._counters["lost_sent"] - lost_before)
            down_since, failures = None, 0
            if not started:
                task_status.started()
                started = True

        while True:
            reason = "?"
            try:
                await self._run_session(node, connected)
            except* (_Lost, *_REDIS_ERRORS) as group:
                reason = _first_message(group)
            # Stopping (coredis's tasks may fail as their connections are cancelled).
            await trio.lowlevel.checkpoint_if_cancelled()
            self._present = False
            self._state = AdapterState.DISCONNECTED
            self._fail_queue()
            if down_since is None:
                down_since = trio.current_time()
                lost_before = self._counters["lost_sent"]
                logger.warning("lost Redis at %s (%s): messages to other nodes fail until it"
                               " is back; reconnecting", self._where, reason)
            else:
                logger.debug("Redis at %s is still unreachable: %s", self._where, reason)
            if not started:
                task_status.started()
                started = True
            if failures:
                low, high = self._backoff
                pause = min(high, low * 2 ** min(failures - 1, 30))
                await trio.sleep(pause * random.uniform(0.5, 1.0))
            failures += 1

    def _client(self) -> coredis.Redis[bytes]:
        client: coredis.Redis[bytes] = coredis.Redis.from_url(
            self.url, retry_policy=NoRetryPolicy(), stream_timeout=self._command_timeout,
            connect_timeout=self._connect_timeout)
        return client

    async def _run_session(self, node: Node, connected: Callable[[], None]) -> None:
        """Connect, restore presence, subscribe, serve until the connection breaks."""
        client = self._client()
        async with client:
            await self._load_scripts(client)
            session = _Session(client, self._node_channel(node.node_id))
            self._session = session
            try:
                await client.set(self._alive_key(node.node_id), b"1", px=self._liveness_ms)
                await self._restore_presence(node, client)
                async with trio.open_nursery() as nursery:
                    await nursery.start(self._subscription_loop, session)
                    self._present = True
                    self._state = AdapterState.CONNECTED
                    connected()
                    nursery.start_soon(self._send_loop, session)
                    nursery.start_soon(self._liveness_loop, node, session)
                    nursery.start_soon(self._presence_loop, node, session)
            finally:
                self._end_session(session)

    async def _subscription_loop(
        self, session: _Session, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Keep the session's subscription, and repair it when it breaks or goes deaf
        while commands still work (Redis killed it, or a probe did not come back);
        when it cannot even be set up again, the whole session is lost."""
        working = False
        broken: str | None = None  # why the last subscription broke, until it is repaired
        while True:
            established, reason = False, "?"
            try:
                # Without retries: the adapter repairs it, and counts what was lost.
                async with PubSub[bytes](
                    session.client.connection_pool, retry_policy=None,
                    ignore_subscribe_messages=True, subscription_timeout=self._command_timeout,
                    unsubscription_timeout=self._command_timeout,
                ) as pubsub:
                    try:
                        async with trio.open_nursery() as nursery:
                            nursery.start_soon(self._read_loop, session, pubsub)
                            await self._resubscribe(session, pubsub)
                            established = True
                            if not working:
                                task_status.started()
                                working = True
                            if broken is not None:
                                self._counters["resubscriptions"] += 1
                                self._log_subscription.warning(
                                    "the subscription to Redis at %s broke (%s) and was made"
                                    " again", self._where, broken)
                                broken = None
                            nursery.start_soon(self._subscriptions_loop, session, pubsub)
                            nursery.start_soon(self._probe_loop, session)
                    finally:
                        session.subscribed.clear()
                        session.notify()
                        # Never used again: closed now, so that coredis does not wait
                        # for a broken (or deaf) connection to confirm unsubscriptions.
                        with contextlib.suppress(RedisError):
                            pubsub.connection.invalidate()
            except* (_Lost, *_REDIS_ERRORS) as group:
                reason = _first_message(group)
            await trio.lowlevel.checkpoint_if_cancelled()
            if not established:
                raise _Lost(f"cannot subscribe: {reason}")
            broken = reason

    async def _resubscribe(self, session: _Session, pubsub: PubSub[bytes]) -> None:
        """Subscribe to this node's channel and its rooms'; count what it missed in
        its rooms while it was not subscribed."""
        channels = [session.node_channel, *self._wanted_channels()]
        async with session.lock:
            await pubsub.subscribe(*channels)
            session.subscribed.update(channels)
        session.notify()
        rooms = [room for room, entry in self._rooms.items() if entry.epoch is not None]
        for room, position in zip(rooms, await self._positions(session.client, rooms),
                                  strict=True):
            self._count_missed(room, position)

    def _end_session(self, session: _Session) -> None:
        if self._state is AdapterState.CONNECTED:
            self._state = AdapterState.DISCONNECTED
        session.closed = True
        session.notify()
        self._session = None
        if session.in_flight:
            self._counters["unconfirmed"] += len(session.in_flight)
            for item in session.in_flight:
                if item.reply is not None:
                    item.reply.fail("the connection to Redis broke while sending")
            session.in_flight = []

    async def _load_scripts(self, client: coredis.Redis[bytes]) -> None:
        for script in self._scripts.values():
            await client.script_load(script.script)

    async def _hand_over(self, node: Node, receive: trio.MemoryReceiveChannel[_Incoming]) -> None:
        async for item in receive:
            if isinstance(item, Signal):
                node.receive_signal(item)
            else:
                node.deliver(*item)

    async def _goodbye(self, node: Node) -> None:
        """On a normal stop: take this node's liveness and members out of Redis, on a
        connection of its own (the session's was cancelled with the node)."""
        try:
            client = self._client()
            async with client:
                await client.delete([self._alive_key(node.node_id)])
                await client.script_load(self._scripts["sync"].script)
                await self._sync_presence(node, client, {room: set() for room in self._members})
        except _REDIS_ERRORS as exc:
            logger.debug("could not take this node out of Redis: %s", exc)

    # --- the outgoing queue -----------------------------------------------------------

    def _enqueue(self, channel: str, payload: bytes, meta: str | None,
                 reply: _Reply | None) -> None:
        if self._state is not AdapterState.CONNECTED:
            self._counters["lost_sent"] += 1
            raise Unavailable("the bus cannot reach its other nodes now")
        if len(self._queue) >= self._queue_size:
            self._counters["lost_sent"] += 1
            self._log_lost.warning("the queue to Redis is full (%d messages): a message to"
                                   " other nodes was refused", self._queue_size)
            raise Unavailable("too many messages to other nodes are waiting")
        self._queue.append(_Outgoing(channel, payload, meta, reply))
        self._queued.set()

    def _enqueue_envelope(self, envelope: Envelope, reply: _Reply | None) -> None:
        # Encoded once, here, for every node; the script adds the position.
        tail = b"".join(msgpack.packb(value) for value in (
            envelope.room, envelope.event, envelope.data, envelope.sender, envelope.delivery,
            envelope.key))
        self._enqueue(self._key(envelope.room, "c"), tail, self._key(envelope.room, "m"), reply)

    def _fail_queue(self) -> None:
        if self._queue:
            self._counters["lost_sent"] += len(self._queue)
            for item in self._queue:
                if item.reply is not None:
                    item.reply.fail("the connection to Redis broke before sending")
            self._queue.clear()

    async def _send_loop(self, session: _Session) -> None:
        while True:
            while not self._queue:
                self._queued = trio.Event()
                await self._queued.wait()
            async with session.lock:
                batch = [self._queue.popleft() for _ in range(min(_BATCH, len(self._queue)))]
                session.in_flight = batch
                results = await self._pipeline(session.client, batch)
                again = [n for n, result in enumerate(results)
                         if isinstance(result, NoScriptError)]
                if again:
                    # Redis forgot the script (SCRIPT FLUSH): load it, send those again.
                    await self._load_scripts(session.client)
                    retried = await self._pipeline(session.client, [batch[n] for n in again])
                    for n, result in zip(again, retried, strict=True):
                        results[n] = result
                session.in_flight = []
                for item, result in zip(batch, results, strict=True):
                    self._sent(session, item, result)

    async def _pipeline(self, client: coredis.Redis[bytes], batch: list[_Outgoing]) -> list[Any]:
        epoch = secrets.token_urlsafe(6)
        sha = self._scripts["publish"].sha
        async with client.pipeline(transaction=False, raise_on_error=False) as pipe:
            for item in batch:
                if item.meta is None:
                    pipe.publish(item.channel, item.payload)
                else:
                    pipe.evalsha(sha, keys=[item.meta], args=[
                        item.channel, epoch, self._room_ms, _ROOM_HEAD, item.payload])
        return list(pipe.results or ())

    def _sent(self, session: _Session, item: _Outgoing, result: Any) -> None:
        if isinstance(result, BaseException):
            self._counters["lost_sent"] += 1
            self._log_refused.warning("Redis refused a message to other nodes: %s", result)
            if item.reply is not None:
                item.reply.fail("Redis refused the message")
        elif item.reply is not None:
            if item.meta is None:
                # A signal does not come back to this node: it does not count.
                item.reply.set(int(result) - (item.channel in session.subscribed))
            else:
                epoch, seq, receivers = result
                item.reply.set(Published(Position(epoch.decode(), int(seq)), int(receivers)))

    # --- the Adapter API: messages ----------------------------------------------------

    async def publish(self, envelope: Envelope) -> Published:
        """Number a room message and hand it to every node subscribed to its room,
        through the queue (so in order with :meth:`publish_nowait`).

        Raises:
            eventbus.Unavailable: the adapter is not connected, its queue is full,
                Redis refused the message, or the connection broke first.
        """
        reply = _Reply()
        self._enqueue_envelope(envelope, reply)
        published: Published = await reply.wait()
        return published

    def publish_nowait(self, envelope: Envelope) -> None:
        """Queue a room message; its position is not known at once (``None``).

        Raises:
            eventbus.Unavailable: the adapter is not connected, or its queue is full
                (``queue_size``); the message is counted in ``lost_sent``.
        """
        self._enqueue_envelope(envelope, None)

    async def signal(self, signal: Signal, *, node: str | None = None) -> int:
        """Send a signal to one node or to the other nodes of ``signal.room``,
        through the queue; returns how many nodes received it.

        Raises:
            eventbus.Unavailable: as :meth:`publish`.
        """
        if self._is_me(node):
            return 0
        reply = _Reply()
        self._enqueue(self._signal_channel(signal, node), _encode_signal(signal), None, reply)
        receivers: int = await reply.wait()
        return receivers

    def signal_nowait(self, signal: Signal, *, node: str) -> bool | None:
        """Queue a signal to one node; whether it arrives is not known at once
        (``None``), except that a node sends nothing to itself (``False``).

        Raises:
            eventbus.Unavailable: as :meth:`publish_nowait`.
        """
        if self._is_me(node):
            return False
        self._enqueue(self._signal_channel(signal, node), _encode_signal(signal), None, None)
        return None

    def _is_me(self, node: str | None) -> bool:
        return self._node is not None and node == self._node.node_id

    def _signal_channel(self, signal: Signal, node: str | None) -> str:
        if node is not None:
            return self._node_channel(node)
        assert signal.room is not None, "a signal goes to a node or to a room's nodes"
        return self._key(signal.room, "c")

    async def position(self, room: str) -> Position:
        """The room's position, read in Redis (its epoch created if it is new).

        Raises:
            eventbus.Unavailable: the adapter is not connected.
        """
        session = self._connected()
        with self._unavailable_on_redis_errors():
            [position] = await self._positions(session.client, [room])
        return position

    async def _positions(self, client: coredis.Redis[bytes], rooms: list[str]) -> list[Position]:
        if not rooms:
            return []
        script = self._scripts["position"]
        epoch = secrets.token_urlsafe(6)
        if len(rooms) == 1:
            # One call: coredis's Script loads the script again on NOSCRIPT.
            results = [await script(keys=[self._key(rooms[0], "m")], args=[epoch, self._room_ms],
                                    client=client)]
        else:
            async with client.pipeline(transaction=False) as pipe:
                for room in rooms:
                    pipe.evalsha(script.sha, keys=[self._key(room, "m")],
                                 args=[epoch, self._room_ms])
            results = list(pipe.results or ())
        return [Position(bytes(e).decode(), int(s)) for e, s in results]

    # --- subscriptions ----------------------------------------------------------------

    async def subscribe(self, room: str) -> Position:
        """Subscribe to ``room`` and return its position, read once Redis confirmed
        the subscription, so that this node receives every later message.

        Raises:
            eventbus.Unavailable: the adapter is not connected (it subscribes to the
                room once it is).
        """
        entry = self._want(room)
        session = self._connected()
        channel = self._key(room, "c")
        while channel not in session.subscribed:
            if session.closed:
                raise Unavailable("the bus cannot reach its other nodes now")
            changed = session.changed
            session.notify()
            await changed.wait()
        position = await self.position(room)
        if entry.epoch != position.epoch:
            entry.epoch, entry.seq, entry.refund = position.epoch, position.seq, 0
        entry.seq = max(entry.seq, position.seq)
        return position

    def subscribe_nowait(self, room: str) -> None:
        """Subscribe to ``room`` without waiting: once connected, as soon as Redis
        confirms it; messages published before that do not reach this node."""
        self._want(room)
        if self._session is not None:
            self._session.notify()

    def _want(self, room: str) -> _Room:
        entry = self._rooms.get(room)
        if entry is None:
            entry = self._rooms[room] = _Room()
        entry.linger_until = None
        return entry

    def unsubscribe_nowait(self, room: str) -> None:
        entry = self._rooms.get(room)
        if entry is not None and entry.linger_until is None:
            entry.linger_until = trio.current_time() + self._linger
            if self._session is not None:
                self._session.notify()

    def _wanted_channels(self) -> dict[str, str]:
        """The channels of the rooms to be subscribed to now (forgetting the others)."""
        now = trio.current_time()
        for room in [room for room, entry in self._rooms.items()
                     if entry.linger_until is not None and entry.linger_until <= now]:
            del self._rooms[room]
        return {self._key(room, "c"): room for room in self._rooms}

    async def _subscriptions_loop(self, session: _Session, pubsub: PubSub[bytes]) -> None:
        while True:
            changed = session.changed
            wanted = self._wanted_channels()
            add = [channel for channel in wanted if channel not in session.subscribed]
            drop = [channel for channel in session.subscribed
                    if channel not in wanted and channel != session.node_channel]
            async with session.lock:
                if add:
                    await pubsub.subscribe(*add)
                    session.subscribed.update(add)
                if drop:
                    await pubsub.unsubscribe(*drop)
                    session.subscribed.difference_update(drop)
            if add or drop:
                session.notify()
                continue
            lingering = [entry.linger_until for entry in self._rooms.values()
                         if entry.linger_until is not None]
            with trio.move_on_at(min(lingering, default=math.inf)):
                await changed.wait()

    # --- receiving --------------------------------------------------------------------

    async def _read_loop(self, session: _Session, pubsub: PubSub[bytes]) -> None:
        # Prompt, and never blocked by the node: coredis buffers without a bound.
        while True:
            message = await pubsub.get_message()
            if message is not None and message["type"] == "message":
                self._received(session, bytes(message["data"]))  # type: ignore[arg-type]

    def _received(self, session: _Session, raw: bytes) -> None:
        session.last_received = trio.current_time()
        try:
            message = _decode(raw)
        except _Undecodable as exc:
            self._counters["undecodable"] += 1
            self._log_undecodable.warning("ignored a message from Redis that this node cannot"
                                          " read: %s", exc)
            return
        if isinstance(message, str):
            if session.probe is not None and session.probe[0] == message:
                session.probe[1].set()
            return
        if isinstance(message, Signal):
            if self._node is not None and message.sender == self._node.node_id:
                return  # a signal to a room's nodes, from this one
        else:
            self._count_gap(*message)
        assert self._inbox is not None
        try:
            self._inbox.send_nowait(message)
        except trio.WouldBlock:
            if not isinstance(message, Signal):
                self._counters["lost_received"] += 1
            self._log_lost.warning("this node's inbox from Redis is full (%d messages): a"
                                   " message was dropped", self._inbox_size)

    def _count_gap(self, envelope: Envelope, position: Position) -> None:
        entry = self._rooms.get(envelope.room)
        if entry is None:
            return
        if entry.epoch != position.epoch:
            if entry.epoch is not None:
                # A new epoch (Redis lost the room) starts at seq 1: this node missed
                # the ones before this message, and the end of the old one, unknown.
                self._counters["epochs_lost"] += 1
                self._counters["lost_received"] += position.seq - 1
            entry.epoch, entry.seq, entry.refund = position.epoch, position.seq, 0
            return
        if position.seq > entry.seq + 1:
            self._counters["lost_received"] += position.seq - entry.seq - 1
        elif position.seq <= entry.seq and entry.refund:
            # Counted as missed when this node resubscribed, and here it is after all.
            entry.refund -= 1
            self._counters["lost_received"] -= 1
        entry.seq = max(entry.seq, position.seq)

    def _count_missed(self, room: str, position: Position) -> None:
        """After a resubscription: what this node missed in ``room`` meanwhile."""
        entry = self._rooms.get(room)
        if entry is None or entry.epoch is None:
            return
        if entry.epoch != position.epoch:
            # The whole new epoch so far (it started at seq 1), and an unknown end of
            # the old one.
            self._counters["epochs_lost"] += 1
            entry.epoch, entry.seq, entry.refund = position.epoch, position.seq, position.seq
            self._counters["lost_received"] += position.seq
        elif position.seq > entry.seq:
            entry.refund = position.seq - entry.seq
            self._counters["lost_received"] += entry.refund
            entry.seq = position.seq

    async def _probe_loop(self, session: _Session) -> None:
        while True:
            await trio.sleep_until(session.last_received + self._probe_interval)
            if trio.current_time() < session.last_received + self._probe_interval:
                continue
            token, arrived = secrets.token_hex(4), trio.Event()
            session.probe = (token, arrived)
            sent_at = trio.current_time()
            receivers = await session.client.publish(
                session.node_channel, msgpack.packb([WIRE_VERSION, _PROBE, token]))
            if receivers:
                with trio.move_on_after(self._probe_timeout):
                    await arrived.wait()
            if not arrived.is_set():
                self._counters["deaf_repairs"] += 1
                raise _Lost("the subscription is deaf: a probe to this node's own channel"
                            f" did not come back within {self._probe_timeout} s")
            self._counters["probe_lag_us"] = round((trio.current_time() - sent_at) * 1e6)

    # --- presence ---------------------------------------------------------------------

    def member_joined(self, room: str, sid: str) -> None:
        self._members.setdefault(room, set()).add(sid)
        self._presence.setdefault(room, {})[sid] = True
        self._presence_changed.set()

    def member_left(self, room: str, sid: str) -> None:
        self._members.get(room, set()).discard(sid)
        self._presence.setdefault(room, {})[sid] = False
        self._presence_changed.set()

    async def members(self, room: str) -> list[Member]:
        """Every connection in ``room`` on a living node. Those of nodes whose
        liveness key expired are left out, and removed from Redis.

        Raises:
            eventbus.Unavailable: the adapter is not connected.
        """
        session = self._connected()
        key = self._key(room, "p")
        with self._unavailable_on_redis_errors():
            entries = {sid.decode(): node.decode()
                       for sid, node in (await session.client.hgetall(key)).items()}
            nodes = sorted(set(entries.values()))
            if not nodes:
                return []
            alive = await session.client.mget([self._alive_key(node) for node in nodes])
            dead = {node for node, value in zip(nodes, alive, strict=True) if value is None}
            if dead:
                await self._scripts["drop_dead"](
                    keys=[key, *(self._alive_key(node) for node in sorted(dead))],
                    args=sorted(dead), client=session.client)
        return [Member(sid, node) for sid, node in entries.items() if node not in dead]

    async def _sync_presence(self, node: Node, client: coredis.Redis[bytes],
                             rooms: Mapping[str, set[str]]) -> None:
        """Make Redis hold exactly ``rooms``' members of this node."""
        if not rooms:
            return
        sha = self._scripts["sync"].sha
        async with client.pipeline(transaction=False) as pipe:
            for room, sids in rooms.items():
                pipe.evalsha(sha, keys=[self._key(room, "p")],
                             args=[node.node_id, self._room_ms, *sorted(sids)])

    async def _restore_presence(self, node: Node, client: coredis.Redis[bytes]) -> None:
        self._presence.clear()
        await self._sync_presence(node, client, dict(self._members))
        self._forget_empty_rooms(list(self._members))

    def _forget_empty_rooms(self, rooms: list[str]) -> None:
        for room in rooms:
            if not self._members.get(room, True) and room not in self._presence:
                del self._members[room]

    async def _presence_loop(self, node: Node, session: _Session) -> None:
        # Joins and leaves, batched: whatever changed while the last batch was sent.
        while True:
            while not self._presence:
                self._presence_changed = trio.Event()
                await self._presence_changed.wait()
            changes, self._presence = self._presence, {}
            async with session.client.pipeline(transaction=False) as pipe:
                for room, change in changes.items():
                    key = self._key(room, "p")
                    joined = {sid: node.node_id for sid, there in change.items() if there}
                    left = [sid for sid, there in change.items() if not there]
                    if joined:
                        pipe.hset(key, joined)
                    if left:
                        pipe.hdel(key, left)
                    pipe.pexpire(key, self._room_ms)
            self._forget_empty_rooms(list(changes))

    async def _liveness_loop(self, node: Node, session: _Session) -> None:
        key = self._alive_key(node.node_id)
        touch_every = self._room_ms / 1000 / 4
        next_touch = trio.current_time() + touch_every
        while True:
            await trio.sleep(self._refresh_interval)
            if trio.current_time() >= next_touch:
                # Quiet rooms keep their position and members while this node is in them.
                next_touch += touch_every
                async with session.client.pipeline(transaction=False) as pipe:
                    for room in self._members:
                        pipe.pexpire(self._key(room, "p"), self._room_ms)
                        pipe.pexpire(self._key(room, "m"), self._room_ms)
            before = await session.client.set(key, b"1", px=self._liveness_ms, get=True)
            if before is None:
                # Too long without a refresh: other nodes may have removed this
                # node's members; write them again.
                logger.warning("this node's liveness key in Redis had expired; its members"
                               " were not counted for a while")
                await self._restore_presence(node, session.client)


def _first_message(group: BaseExceptionGroup[BaseException]) -> str:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
