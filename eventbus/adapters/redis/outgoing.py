"""The outgoing queue: every message this node sends to the others, room messages
and signals, in one ordered queue that one task sends in pipelines."""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Collection
from typing import Any

import coredis
import trio
from coredis.exceptions import NoScriptError

from ...errors import Unavailable
from ...protocol import Position
from ..base import Published
from .logs import LogBudget
from .scripts import Scripts
from .session import Session
from .wire import ROOM_HEAD

__all__ = ["BATCH", "Outgoing", "OutgoingQueue", "Reply"]

#: How many queued messages one pipeline carries at most.
BATCH = 512


class Reply:
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


class Outgoing:
    """A queued message: a room message for the publish script (``keys`` set: the
    room's keys; the message's tail in ``payload``; ``history``: the script's
    history arguments, then the epoch and last seq this node was handed in the
    room) or a plain PUBLISH of ``payload`` to ``channel``."""

    __slots__ = ("channel", "history", "keys", "payload", "reply")

    def __init__(self, channel: str, payload: bytes, keys: list[str] | None,
                 reply: Reply | None,
                 history: tuple[int, int, int, str, str, int] = (0, 0, 0, "", "", 0),
                 ) -> None:
        self.channel = channel
        self.payload = payload
        self.keys = keys
        self.reply = reply
        self.history = history


class OutgoingQueue:
    """At most ``size`` messages waiting to go, and the task that sends them
    (:meth:`send_loop`, one per session). What is refused, or lost when the
    connection breaks, is counted in ``counters``.
    """

    def __init__(self, size: int, scripts: Scripts, counters: dict[str, int], *,
                 room_ms: int, log_lost: LogBudget, log_refused: LogBudget) -> None:
        self._size = size
        self._scripts = scripts
        self._counters = counters
        self._room_ms = room_ms
        self._log_lost = log_lost
        self._log_refused = log_refused
        self._items: deque[Outgoing] = deque()
        self._queued = trio.Event()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: Outgoing) -> None:
        """Queue ``item``.

        Raises:
            eventbus.Unavailable: the queue is full (the message is counted in
                ``lost_sent``).
        """
        if len(self._items) >= self._size:
            self._counters["lost_sent"] += 1
            self._log_lost.warning("the queue to Redis is full (%d messages): a message to"
                                   " other nodes was refused", self._size)
            raise Unavailable("too many messages to other nodes are waiting")
        self._items.append(item)
        self._queued.set()

    def fail(self) -> None:
        """The connection broke: what is queued is lost (``lost_sent``)."""
        if self._items:
            self._fail(self._items, "lost_sent", "the connection to Redis broke before sending")
            self._items.clear()

    def fail_in_flight(self, session: Session) -> None:
        """``session``'s connection broke: what was on the wire may have been
        delivered, or not (``unconfirmed``)."""
        if session.in_flight:
            self._fail(session.in_flight, "unconfirmed",
                       "the connection to Redis broke while sending")
            session.in_flight = []

    def _fail(self, items: Collection[Outgoing], counter: str, why: str) -> None:
        self._counters[counter] += len(items)
        for item in items:
            if item.reply is not None:
                item.reply.fail(why)

    async def send_loop(self, session: Session) -> None:
        while True:
            while not self._items:
                self._queued = trio.Event()
                await self._queued.wait()
            async with session.lock:
                batch = [self._items.popleft() for _ in range(min(BATCH, len(self._items)))]
                session.in_flight = batch
                results = await self._pipeline(session.client, batch)
                again = [n for n, result in enumerate(results)
                         if isinstance(result, NoScriptError)]
                if again:
                    # Redis forgot the script (SCRIPT FLUSH): load it, send those again.
                    await self._scripts.load(session.client)
                    retried = await self._pipeline(session.client, [batch[n] for n in again])
                    for n, result in zip(again, retried, strict=True):
                        results[n] = result
                session.in_flight = []
                for item, result in zip(batch, results, strict=True):
                    self._sent(session, item, result)

    async def _pipeline(self, client: coredis.Redis[bytes], batch: list[Outgoing]) -> list[Any]:
        epoch = secrets.token_urlsafe(6)
        sha = self._scripts.publish.sha
        async with client.pipeline(transaction=False, raise_on_error=False) as pipe:
            for item in batch:
                if item.keys is None:
                    pipe.publish(item.channel, item.payload)
                else:
                    pipe.evalsha(sha, keys=item.keys, args=[
                        epoch, self._room_ms, item.channel, ROOM_HEAD, item.payload,
                        *item.history])
        return list(pipe.results or ())

    def _sent(self, session: Session, item: Outgoing, result: Any) -> None:
        if isinstance(result, BaseException):
            self._counters["lost_sent"] += 1
            self._log_refused.warning("Redis refused a message to other nodes: %s", result)
            if item.reply is not None:
                item.reply.fail("Redis refused the message")
        elif item.reply is not None:
            if item.keys is None:
                # A signal does not come back to this node: it does not count.
                item.reply.set(int(result) - (item.channel in session.subscribed))
            else:
                epoch, seq, receivers, kept, repeat = result
                item.reply.set(Published(Position(epoch.decode(), int(seq)), int(receivers),
                                         kept=bool(kept), repeat=bool(repeat)))
