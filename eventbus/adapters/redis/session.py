"""One connection to Redis, a :class:`Session`, and what ends it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import coredis
import trio
from coredis.exceptions import RedisError

if TYPE_CHECKING:
    from .outgoing import Outgoing

__all__ = ["REDIS_ERRORS", "Lost", "Session", "first_message"]


class Lost(Exception):
    """The connection, or its subscription, must be made again."""


#: What coredis raises when Redis cannot be reached or answered too late (and, from
#: its own tasks, when their connection closed under them).
REDIS_ERRORS = (RedisError, OSError, TimeoutError, anyio.ClosedResourceError,
                anyio.BrokenResourceError, anyio.EndOfStream)


class Session:
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
        self.in_flight: list[Outgoing] = []
        #: Held while a batch is sent and while subscriptions change, so that the
        #: adapter knows for each message whether Redis counted this node in its
        #: receivers (a signal to a room must not count its sender).
        self.lock = trio.Lock()
        self.last_received = trio.current_time()
        self.probe: tuple[str, trio.Event] | None = None

    def notify(self) -> None:
        changed, self.changed = self.changed, trio.Event()
        changed.set()


def first_message(group: BaseExceptionGroup[BaseException]) -> str:
    """Why a session ended: the first exception of ``group``, in one line."""
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
