"""The subscriber: a session's subscription to this node's channel and to its rooms',
kept up to date, repaired when it breaks or goes deaf (probes), and what it brings,
decoded and handed to the node through a bounded inbox."""

from __future__ import annotations

import contextlib
import secrets

import trio
from coredis.exceptions import RedisError
from coredis.patterns.pubsub import PubSub

from ..base import Signal
from .handover import CATCH_UP, Inbox
from .logs import LogBudget
from .rooms import Rooms
from .session import REDIS_ERRORS, Lost, Session, first_message
from .wire import Undecodable, decode, encode_probe

__all__ = ["Subscriber"]


class Subscriber:
    """What comes from Redis to this node: :meth:`open` it for a node, then
    :meth:`run` it in each session.

    Args:
        rooms: The rooms to be subscribed to, and where this node stands in them
            (told when it may be behind: a resubscription, a message dropped).
        counters: The adapter's counters (``resubscriptions``, ``undecodable``,
            ``deaf_repairs``, ``probe_lag_us``).
        where: Redis, for the log.
        log_lost: The log budget of lost messages (an inbox full).
    """

    def __init__(self, rooms: Rooms, counters: dict[str, int], *, inbox_size: int,
                 command_timeout: float, probe_interval: float, probe_timeout: float,
                 where: str, log_lost: LogBudget) -> None:
        self._rooms = rooms
        self._counters = counters
        self._inbox_size = inbox_size
        self._command_timeout = command_timeout
        self._probe_interval = probe_interval
        self._probe_timeout = probe_timeout
        self._where = where
        self._log_lost = log_lost
        self._log_subscription = LogBudget()
        self._log_undecodable = LogBudget()
        self._node_id: str | None = None
        self._inbox: trio.MemorySendChannel[Inbox] | None = None

    def open(self, node_id: str) -> trio.MemoryReceiveChannel[Inbox]:
        """Receive for node ``node_id``, whose messages come out of the channel returned."""
        self._node_id = node_id
        send, receive = trio.open_memory_channel[Inbox](self._inbox_size)
        self._inbox = send
        return receive

    def wake(self) -> None:
        """Tell the hand-over that a room may be behind (when the inbox is full it is
        busy, and looks once it has emptied it)."""
        if self._inbox is not None:
            with contextlib.suppress(trio.WouldBlock):
                self._inbox.send_nowait(CATCH_UP)

    def close(self) -> None:
        self._node_id = None
        self._inbox = None

    def inbox_used(self) -> int:
        """Messages received from Redis, not yet taken by the node."""
        return self._inbox.statistics().current_buffer_used if self._inbox else 0

    async def run(
        self, session: Session, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
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
            except* (Lost, *REDIS_ERRORS) as group:
                reason = first_message(group)
            await trio.lowlevel.checkpoint_if_cancelled()
            if not established:
                raise Lost(f"cannot subscribe: {reason}")
            broken = reason

    async def _resubscribe(self, session: Session, pubsub: PubSub[bytes]) -> None:
        """Subscribe to this node's channel and its rooms'; have the hand-over catch
        up on what the node missed of its rooms while it was not subscribed."""
        channels = [session.node_channel, *self._rooms.channels()]
        async with session.lock:
            await pubsub.subscribe(*channels)
            session.subscribed.update(channels)
        session.notify()
        rooms = self._rooms.known()
        behind = [self._rooms.behind(room, position) for room, position in zip(
            rooms, await self._rooms.positions(session.client, rooms), strict=True)]
        if any(behind):
            self.wake()

    async def _subscriptions_loop(self, session: Session, pubsub: PubSub[bytes]) -> None:
        while True:
            changed = session.changed
            wanted = self._rooms.channels()
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
            with trio.move_on_at(self._rooms.lingering_until()):
                await changed.wait()

    async def _read_loop(self, session: Session, pubsub: PubSub[bytes]) -> None:
        # Prompt, and never blocked by the node: coredis buffers without a bound.
        while True:
            message = await pubsub.get_message()
            if message is not None and message["type"] == "message":
                self._received(session, bytes(message["data"]))  # type: ignore[arg-type]

    def _received(self, session: Session, raw: bytes) -> None:
        session.last_received = trio.current_time()
        try:
            message = decode(raw)
        except Undecodable as exc:
            self._counters["undecodable"] += 1
            self._log_undecodable.warning("ignored a message from Redis that this node cannot"
                                          " read: %s", exc)
            return
        if isinstance(message, str):
            if session.probe is not None and session.probe[0] == message:
                session.probe[1].set()
            return
        if (isinstance(message, Signal) and self._node_id is not None
                and message.sender == self._node_id):
            return  # a signal to a room's nodes, from this one
        assert self._inbox is not None
        try:
            self._inbox.send_nowait(message)
        except trio.WouldBlock:
            if isinstance(message, Signal):
                self._log_lost.warning("this node's inbox from Redis is full (%d messages):"
                                       " a signal was dropped", self._inbox_size)
            else:
                # Read back from history once the hand-over has emptied the inbox.
                self._rooms.behind(message[0].room, message[1])
                self._log_lost.warning("this node's inbox from Redis is full (%d messages): a"
                                       " room message is left to be read from history",
                                       self._inbox_size)

    async def _probe_loop(self, session: Session) -> None:
        while True:
            await trio.sleep_until(session.last_received + self._probe_interval)
            if trio.current_time() < session.last_received + self._probe_interval:
                continue
            token, arrived = secrets.token_hex(4), trio.Event()
            session.probe = (token, arrived)
            sent_at = trio.current_time()
            receivers = await session.client.publish(session.node_channel, encode_probe(token))
            if receivers:
                with trio.move_on_after(self._probe_timeout):
                    await arrived.wait()
            if not arrived.is_set():
                self._counters["deaf_repairs"] += 1
                raise Lost("the subscription is deaf: a probe to this node's own channel"
                           f" did not come back within {self._probe_timeout} s")
            self._counters["probe_lag_us"] = round((trio.current_time() - sent_at) * 1e6)
