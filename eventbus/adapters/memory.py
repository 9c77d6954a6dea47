"""The in-memory adapter: the nodes of a bus in one process, or one node alone.

This is the default: ``EventBus()`` gets a :class:`MemoryAdapter` on a hub of its
own, which is a single node with no external service, as eventbus always was.
Several buses given adapters on one :class:`MemoryHub` share rooms the way nodes
on one Redis do, which is what tests and the adapter conformance suite use.

Everything happens at once: a publish is numbered, kept in its room's history
and delivered to every node's members before :meth:`MemoryAdapter.publish_nowait`
returns. History lives in the process: a restart loses it, and every room starts a
new epoch, so that a client resuming after it is told so.
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections import deque
from collections.abc import Callable, Mapping

import msgpack
import trio

from ..errors import Unavailable
from ..protocol import Position
from .base import (
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

__all__ = ["MemoryAdapter", "MemoryHub"]

#: Seconds a room without nodes keeps its position after its history emptied, so
#: that a client resuming a quiet room is told "recovered", not "epoch changed".
ROOM_KEEP = 3600.0
#: Seconds between sweeps of rooms nobody uses any more.
_SWEEP_INTERVAL = 60.0


def _size(envelope: Envelope) -> int:
    """What a message counts against a history's ``max_bytes``."""
    try:
        return len(msgpack.packb(envelope.data)) + len(envelope.event) + 16
    except (TypeError, ValueError, OverflowError):
        return 1024  # checked data always packs; a guess keeps the bound meaningful


class _Entry:
    __slots__ = ("at", "envelope", "seq", "size")

    def __init__(self, seq: int, envelope: Envelope, at: float) -> None:
        self.seq = seq
        self.envelope = envelope
        self.at = at
        self.size = _size(envelope)


class _Room:
    __slots__ = ("bounds", "bytes", "epoch", "history", "ids", "nodes", "seq", "used")

    def __init__(self, now: float) -> None:
        self.epoch = secrets.token_urlsafe(6)
        self.seq = 0
        # Subscribed nodes in subscription order, as an ordered set.
        self.nodes: dict[MemoryAdapter, None] = {}
        # The kept messages, oldest first; their seqs are consecutive.
        self.history: deque[_Entry] = deque()
        self.bytes = 0
        # Publish ids of the kept messages: (session, publish id) -> seq.
        self.ids: dict[tuple[str, int], int] = {}
        # When it was last published to (or made), and the bounds it was kept under.
        self.used = now
        self.bounds: HistoryBounds | None = None

    def keep(self, entry: _Entry, bounds: HistoryBounds) -> None:
        self.bounds = bounds
        self.history.append(entry)
        self.bytes += entry.size
        envelope = entry.envelope
        if envelope.publish_id is not None and envelope.sender is not None:
            self.ids[(envelope.sender, envelope.publish_id)] = entry.seq
        self.trim(bounds, entry.at)

    def forget(self) -> None:
        self.history.clear()
        self.ids.clear()
        self.bytes = 0

    def trim(self, bounds: HistoryBounds, now: float) -> None:
        history = self.history
        oldest = now - bounds.age
        while history and (len(history) > bounds.size or self.bytes > bounds.max_bytes
                           or history[0].at < oldest):
            entry = history.popleft()
            self.bytes -= entry.size
            envelope = entry.envelope
            if envelope.publish_id is not None and envelope.sender is not None:
                self.ids.pop((envelope.sender, envelope.publish_id), None)


class MemoryHub:
    """What the nodes on one hub share: rooms, their positions and histories, and
    the nodes.

    A room lives while some node is subscribed to it, or while it keeps history; a
    room without either is forgotten (a later join starts a new epoch), at once
    when it keeps no history, else :data:`ROOM_KEEP` seconds after its history
    emptied.
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        #: What message ages are measured with. Not trio's clock: each trio run starts
        #: it at a random offset, and a hub outlives the run of a bus that restarts.
        self.clock = clock
        self._rooms: dict[str, _Room] = {}
        self._nodes: dict[str, MemoryAdapter] = {}
        #: The secret the nodes on this hub share (resume tokens).
        self.secret = secrets.token_bytes(32)

    def _room(self, name: str) -> _Room:
        room = self._rooms.get(name)
        if room is None:
            room = self._rooms[name] = _Room(self.clock())
        return room

    def sweep(self, now: float) -> None:
        """Forget the rooms without nodes whose history emptied long enough ago."""
        for name, room in list(self._rooms.items()):
            if room.nodes:
                continue
            if room.bounds is not None:
                room.trim(room.bounds, now)
            if not room.history and now - room.used > ROOM_KEEP:
                del self._rooms[name]


class MemoryAdapter(Adapter):
    """A node on a :class:`MemoryHub` (a new hub of its own by default).

    Args:
        hub: The hub shared with the other nodes of the bus.
    """

    def __init__(self, hub: MemoryHub | None = None) -> None:
        self.hub = hub if hub is not None else MemoryHub()
        self._node: Node | None = None
        self._last_node: Node | None = None
        self._closed = False

    def __repr__(self) -> str:
        node = self._node.node_id if self._node is not None else "unstarted"
        return f"<MemoryAdapter {node}>"

    @property
    def state(self) -> AdapterState:
        return AdapterState.CONNECTED if self._node is not None else AdapterState.IDLE

    def attach(self, node: Node) -> None:
        """Serve ``node`` (what :meth:`run` does first); a bus calls it when it is
        made, so that a bus not yet running delivers to its members too."""
        if self._node is not None and self._node is not node:
            raise RuntimeError("this adapter already serves another node")
        self._node = self._last_node = node
        self.hub._nodes[node.node_id] = self

    async def run(
        self, node: Node, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        self.attach(node)
        task_status.started()
        try:
            while True:
                await trio.sleep(_SWEEP_INTERVAL)
                self.hub.sweep(self.hub.clock())
        finally:
            # A node that stops serving is gone for the others at once.
            self.hub._nodes.pop(node.node_id, None)
            for name, room in list(self.hub._rooms.items()):
                room.nodes.pop(self, None)
                if not room.nodes and not self._keeps_history(name):
                    del self.hub._rooms[name]
            self._node = None

    def _keeps_history(self, room: str) -> bool:
        # The node that served last decides, even once stopped: its connections
        # leave their rooms after the adapter stopped, and a restarted bus must find
        # its rooms' histories (and epochs) as they were.
        node = self._node or self._last_node
        return node is not None and node.history_bounds(room) is not None

    def _attached(self) -> Node:
        if self._node is None:
            raise Unavailable("the adapter serves no node")
        return self._node

    async def subscribe(self, room: str) -> Position:
        self._attached()
        found = self.hub._room(room)
        found.nodes[self] = None
        return Position(found.epoch, found.seq)

    def subscribe_nowait(self, room: str) -> None:
        self.hub._room(room).nodes[self] = None

    def unsubscribe_nowait(self, room: str) -> None:
        found = self.hub._rooms.get(room)
        if found is None:
            return
        found.nodes.pop(self, None)
        if not found.nodes and not self._keeps_history(room):
            del self.hub._rooms[room]

    async def position(self, room: str) -> Position:
        found = self.hub._rooms.get(room)
        if found is None:
            # A room nobody is in: a new epoch, forgotten again at once.
            return Position(secrets.token_urlsafe(6), 0)
        return Position(found.epoch, found.seq)

    async def publish(self, envelope: Envelope) -> Published:
        published = self.publish_nowait(envelope)
        assert published is not None
        return published

    def publish_nowait(self, envelope: Envelope) -> Published:
        node = self._node
        bounds = node.history_bounds(envelope.room) if node is not None else None
        found = self.hub._rooms.get(envelope.room)
        if found is None:
            if bounds is None:
                return Published(Position(secrets.token_urlsafe(6), 0), 0)
            found = self.hub._room(envelope.room)
        now = self.hub.clock()
        found.used = now
        if bounds is not None:
            if envelope.publish_id is not None and envelope.sender is not None:
                found.trim(bounds, now)
                seq = found.ids.get((envelope.sender, envelope.publish_id))
                if seq is not None:
                    # Sent to nobody: the first one was.
                    return Published(Position(found.epoch, seq), 0, kept=True, repeat=True)
            found.seq += 1
            found.keep(_Entry(found.seq, envelope, now), bounds)
        else:
            found.seq += 1
            if found.history:
                # Numbered without being kept (a node whose policy differs): a history
                # with a hole would replay the wrong messages, so it starts again.
                found.forget()
        position = Position(found.epoch, found.seq)
        for adapter in found.nodes:
            if adapter._node is not None:
                adapter._node.deliver(envelope, position)
        return Published(position, len(found.nodes), kept=bounds is not None)

    async def history(
        self, room: str, epoch: str, after: int, limit: int, bounds: HistoryBounds,
    ) -> HistoryPage:
        found = self.hub._rooms.get(room)
        if found is None:
            return HistoryPage(Position(secrets.token_urlsafe(6), 0), 1, [])
        found.trim(bounds, self.hub.clock())
        history = found.history
        first = history[0].seq if history else found.seq + 1
        position = Position(found.epoch, found.seq)
        if epoch != found.epoch or not history:
            return HistoryPage(position, first, [])
        start = max(0, after + 1 - first)
        return HistoryPage(position, first, [
            (entry.seq, entry.envelope)
            for entry in itertools.islice(history, start, start + limit)])

    def shared_secret(self) -> bytes:
        return self.hub.secret

    async def signal(self, signal: Signal, *, node: str | None = None) -> int:
        return self._signal(signal, node)

    def signal_nowait(self, signal: Signal, *, node: str) -> bool:
        return self._signal(signal, node) == 1

    def _signal(self, signal: Signal, node: str | None) -> int:
        if node is not None:
            target = self.hub._nodes.get(node)
            if target is None or target._node is None or target is self:
                return 0
            target._node.receive_signal(signal)
            return 1
        assert signal.room is not None, "a signal goes to a node or to a room's nodes"
        found = self.hub._rooms.get(signal.room)
        if found is None:
            return 0
        receivers = [adapter._node for adapter in found.nodes
                     if adapter._node is not None and adapter is not self]
        for receiver in receivers:
            receiver.receive_signal(signal)
        return len(receivers)

    def member_joined(self, room: str, sid: str) -> None:
        pass  # the hub asks each node for its members when asked (always current)

    def member_left(self, room: str, sid: str) -> None:
        pass

    async def members(self, room: str) -> list[Member]:
        found = self.hub._rooms.get(room)
        if found is None:
            return []
        return [
            Member(sid, adapter._node.node_id)
            for adapter in found.nodes if adapter._node is not None
            for sid in adapter._node.local_members(room)
        ]

    def statistics(self) -> Mapping[str, int | str]:
        return {"state": self.state.value, "nodes": len(self.hub._nodes)}
