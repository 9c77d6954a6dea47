"""The :class:`RedisAdapter`: one node's connection to the bus's Redis, kept up by
reconnecting, and the :class:`~eventbus.adapters.Adapter` API over the queue, the
subscriber and the presence of this node (see the package docs,
:mod:`eventbus.adapters.redis`)."""

from __future__ import annotations

import contextlib
import random
import secrets
from collections.abc import Callable, Iterator, Mapping
from urllib.parse import urlsplit

import coredis
import trio
from coredis.exceptions import ResponseError
from coredis.retry import NoRetryPolicy
from coredis.tokens import PureToken

from ...errors import Unavailable
from ...protocol import Position
from ..base import (
    Adapter,
    AdapterState,
    Envelope,
    HistoryBounds,
    HistoryPage,
    Member,
    Node,
    Published,
    Signal,
)
from .handover import HandOver
from .history import Histories, history_args
from .keys import Keys
from .logs import LogBudget, logger
from .outgoing import Outgoing, OutgoingQueue, Reply
from .presence import Presence
from .rooms import Rooms
from .scripts import Scripts
from .session import REDIS_ERRORS, Lost, Session, first_message
from .subscriber import Subscriber
from .wire import encode_signal, room_tail

__all__ = ["RedisAdapter"]


class RedisAdapter(Adapter):
    """A node of a bus whose nodes meet on one Redis (see the package docs).

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
        self._keys = Keys(prefix)
        if refresh_interval >= liveness_ttl:
            raise ValueError("refresh_interval must be shorter than liveness_ttl")
        self.url = url
        self.prefix = prefix
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
        self._session: Session | None = None
        self._scripts = Scripts()
        self._log_lost = LogBudget()
        self._log_refused = LogBudget()
        self._counters = dict.fromkeys((
            "reconnects", "resubscriptions", "lost_sent", "unconfirmed", "lost_received",
            "epochs_lost", "repaired", "undecodable", "deaf_repairs", "probe_lag_us"), 0)
        # The bus's shared secret, as read at the last session start.
        self._secret: bytes | None = None
        room_ms = max(1, round(room_ttl * 1000))
        self._queue = OutgoingQueue(queue_size, self._scripts, self._counters, room_ms=room_ms,
                                    log_lost=self._log_lost, log_refused=self._log_refused)
        self._rooms = Rooms(self._keys, self._scripts, linger=linger, room_ms=room_ms)
        self._histories = Histories(self._keys, self._scripts, self._counters, room_ms=room_ms,
                                    log=LogBudget())
        self._handover = HandOver(self._rooms, self._counters, self._read_history,
                                  log_lost=self._log_lost)
        self._subscriber = Subscriber(
            self._rooms, self._counters, inbox_size=inbox_size, command_timeout=command_timeout,
            probe_interval=probe_interval, probe_timeout=probe_timeout, where=self._where,
            log_lost=self._log_lost)
        self._presence = Presence(self._keys, self._scripts, room_ms=room_ms,
                                  liveness_ms=max(1, round(liveness_ttl * 1000)),
                                  refresh_interval=refresh_interval)

    def __repr__(self) -> str:
        node = self._node.node_id if self._node is not None else "unstarted"
        return f"<RedisAdapter {node} {self.prefix!r} at {self._where}: {self._state.value}>"

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
          (missed while it was not subscribed, or dropped with its inbox full) and
          could not read back from the room's history;
        * ``epochs_lost``: rooms whose epoch changed while this node was away, so
          that what it missed of the old epoch cannot be counted;
        * ``repaired``: messages this node missed and read back from history, handed
          to it in order before the ones that came after them;
        * ``undecodable``: messages from other nodes (or entries of a history) that
          this version cannot read;
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
            "inbox": self._subscriber.inbox_used(),
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
        except REDIS_ERRORS as exc:
            raise Unavailable("the bus cannot reach its other nodes now") from exc

    def _connected(self) -> Session:
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
        receive = self._subscriber.open(node.node_id)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._handover.run, node, receive)
                await self._keep_connected(node, task_status)
        finally:
            present, self._present = self._present, False
            self._state = AdapterState.IDLE
            self._queue.fail()
            if present:
                with trio.CancelScope(shield=True), trio.move_on_after(self._command_timeout):
                    await self._goodbye(node)
            self._node = None
            self._subscriber.close()

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
            except* (Lost, *REDIS_ERRORS) as group:
                reason = first_message(group)
            # Stopping (coredis's tasks may fail as their connections are cancelled).
            await trio.lowlevel.checkpoint_if_cancelled()
            self._present = False
            self._state = AdapterState.DISCONNECTED
            self._queue.fail()
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
            await self._scripts.load(client)
            await self._share_secret(client)
            session = Session(client, self._keys.node_channel(node.node_id))
            self._session = session
            try:
                await self._presence.arrive(node.node_id, client)
                async with trio.open_nursery() as nursery:
                    await nursery.start(self._subscriber.run, session)
                    self._present = True
                    self._state = AdapterState.CONNECTED
                    connected()
                    nursery.start_soon(self._queue.send_loop, session)
                    nursery.start_soon(self._presence.liveness_loop, node.node_id, client)
                    nursery.start_soon(self._presence.changes_loop, node.node_id, client)
            finally:
                self._end_session(session)

    def _end_session(self, session: Session) -> None:
        if self._state is AdapterState.CONNECTED:
            self._state = AdapterState.DISCONNECTED
        session.closed = True
        session.notify()
        self._session = None
        self._queue.fail_in_flight(session)

    async def _share_secret(self, client: coredis.Redis[bytes]) -> None:
        key = self._keys.secret()
        # The first node to reach a Redis without one (new, or restarted empty) leaves
        # its own: a node that knew the secret before gives it back, so that tokens
        # signed before the restart stay valid.
        mine = self._secret if self._secret is not None else secrets.token_bytes(32)
        await client.set(key, mine, condition=PureToken.NX)
        shared = await client.get(key)
        self._secret = bytes(shared) if shared is not None else mine

    def shared_secret(self) -> bytes | None:
        """The secret every node of the bus shares, kept in Redis (``None`` until
        the first connection)."""
        return self._secret

    async def _goodbye(self, node: Node) -> None:
        """On a normal stop: take this node's liveness and members out of Redis, on a
        connection of its own (the session's was cancelled with the node)."""
        try:
            client = self._client()
            async with client:
                await self._presence.leave(node.node_id, client)
        except REDIS_ERRORS as exc:
            logger.debug("could not take this node out of Redis: %s", exc)

    # --- the outgoing queue -----------------------------------------------------------

    def _enqueue(self, item: Outgoing) -> None:
        if self._state is not AdapterState.CONNECTED:
            self._counters["lost_sent"] += 1
            raise Unavailable("the bus cannot reach its other nodes now")
        self._queue.put(item)

    def _enqueue_envelope(self, envelope: Envelope, reply: Reply | None) -> None:
        # Encoded once, here, for every node; the script adds the position. The
        # bounds are the room's as this node's policy has them when it is sent.
        room = envelope.room
        bounds = self._node.history_bounds(room) if self._node is not None else None
        # What this node was handed of the room: the script starts a new epoch if
        # Redis numbers below it (Redis went back on acknowledged messages).
        known = self._rooms.get(room)
        seen = (known.epoch or "", known.seq) if known is not None else ("", 0)
        self._enqueue(Outgoing(self._keys.room(room, "c"), room_tail(envelope),
                               self._keys.room_keys(room), reply,
                               (*history_args(bounds, envelope), *seen)))

    # --- the Adapter API: messages ----------------------------------------------------

    async def publish(self, envelope: Envelope) -> Published:
        """Number a room message and hand it to every node subscribed to its room,
        through the queue (so in order with :meth:`publish_nowait`).

        Raises:
            eventbus.Unavailable: the adapter is not connected, its queue is full,
                Redis refused the message, or the connection broke first.
        """
        reply = Reply()
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
        reply = Reply()
        self._enqueue(Outgoing(self._signal_channel(signal, node), encode_signal(signal), None,
                               reply))
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
        self._enqueue(Outgoing(self._signal_channel(signal, node), encode_signal(signal), None,
                               None))
        return None

    def _is_me(self, node: str | None) -> bool:
        return self._node is not None and node == self._node.node_id

    def _signal_channel(self, signal: Signal, node: str | None) -> str:
        if node is not None:
            return self._keys.node_channel(node)
        assert signal.room is not None, "a signal goes to a node or to a room's nodes"
        return self._keys.room(signal.room, "c")

    async def position(self, room: str) -> Position:
        """The room's position, read in Redis (its epoch created if it is new).

        Raises:
            eventbus.Unavailable: the adapter is not connected.
        """
        session = self._connected()
        with self._unavailable_on_redis_errors():
            [position] = await self._rooms.positions(session.client, [room])
        return position

    # --- history ------------------------------------------------------------------------

    async def history(
        self, room: str, epoch: str, after: int, limit: int, bounds: HistoryBounds,
    ) -> HistoryPage:
        """Read ``room``'s history in Redis, atomically with its position: at most
        ``limit`` messages after seq ``after`` (none when ``epoch`` is not the room's
        current one), older ones than ``bounds.age`` left out (and trimmed).

        Raises:
            eventbus.Unavailable: the adapter is not connected, or Redis failed.
        """
        session = self._connected()
        with self._unavailable_on_redis_errors():
            return await self._histories.read(session.client, room, epoch, after, limit, bounds)

    async def _read_history(self, room: str, epoch: str, after: int, limit: int,
                            bounds: HistoryBounds) -> HistoryPage:
        # For the hand-over, which repairs as soon as a session is there: even before
        # the adapter calls itself connected (right after resubscribing).
        session = self._session
        if session is None or session.closed:
            raise Unavailable("the bus cannot reach its other nodes now")
        with self._unavailable_on_redis_errors():
            return await self._histories.read(session.client, room, epoch, after, limit, bounds)

    # --- subscriptions ----------------------------------------------------------------

    async def subscribe(self, room: str) -> Position:
        """Subscribe to ``room`` and return its position, read once Redis confirmed
        the subscription, so that this node receives every later message.

        Raises:
            eventbus.Unavailable: the adapter is not connected (it subscribes to the
                room once it is).
        """
        self._rooms.want(room)
        session = self._connected()
        channel = self._keys.room(room, "c")
        while channel not in session.subscribed:
            if session.closed:
                raise Unavailable("the bus cannot reach its other nodes now")
            changed = session.changed
            session.notify()
            await changed.wait()
        position = await self.position(room)
        if self._rooms.subscribed_at(room, position):
            self._subscriber.wake()
        return position

    def subscribe_nowait(self, room: str) -> None:
        """Subscribe to ``room`` without waiting: once connected, as soon as Redis
        confirms it; messages published before that do not reach this node."""
        self._rooms.want(room)
        if self._session is not None:
            self._session.notify()

    def unsubscribe_nowait(self, room: str) -> None:
        if self._rooms.unwant(room) and self._session is not None:
            self._session.notify()

    # --- presence ---------------------------------------------------------------------

    def member_joined(self, room: str, sid: str) -> None:
        self._presence.joined(room, sid)

    def member_left(self, room: str, sid: str) -> None:
        self._presence.left(room, sid)

    async def members(self, room: str) -> list[Member]:
        """Every connection in ``room`` on a living node. Those of nodes whose
        liveness key expired are left out, and removed from Redis.

        Raises:
            eventbus.Unavailable: the adapter is not connected.
        """
        session = self._connected()
        with self._unavailable_on_redis_errors():
            return await self._presence.members(session.client, room)
