"""The in-memory adapter: the nodes of a bus in one process, or one node alone.

This is the default: ``EventBus()`` gets a :class:`MemoryAdapter` on a hub of its
own, which is a single node with no external service, as eventbus always was.
Several buses given adapters on one :class:`MemoryHub` share rooms the way nodes
on one Redis do, which is what tests and the adapter conformance suite use.

Everything happens at once: a publish is numbered and delivered to every node's
members before :meth:`MemoryAdapter.publish_nowait` returns.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping

import trio

from ..errors import Unavailable
from ..protocol import Position
from .base import Adapter, AdapterState, Envelope, Member, Node, Published, Signal

__all__ = ["MemoryAdapter", "MemoryHub"]


class _Room:
    __slots__ = ("epoch", "nodes", "seq")

    def __init__(self) -> None:
        self.epoch = secrets.token_urlsafe(6)
        self.seq = 0
        # Subscribed nodes in subscription order, as an ordered set.
        self.nodes: dict[MemoryAdapter, None] = {}


class MemoryHub:
    """What the nodes on one hub share: rooms, their positions, and the nodes.

    A room's position lives while some node is subscribed to it; when the last one
    unsubscribes, the room is forgotten (a later join starts a new epoch).
    """

    def __init__(self) -> None:
        self._rooms: dict[str, _Room] = {}
        self._nodes: dict[str, MemoryAdapter] = {}

    def _room(self, name: str) -> _Room:
        room = self._rooms.get(name)
        if room is None:
            room = self._rooms[name] = _Room()
        return room


class MemoryAdapter(Adapter):
    """A node on a :class:`MemoryHub` (a new hub of its own by default).

    Args:
        hub: The hub shared with the other nodes of the bus.
    """

    def __init__(self, hub: MemoryHub | None = None) -> None:
        self.hub = hub if hub is not None else MemoryHub()
        self._node: Node | None = None
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
        self._node = node
        self.hub._nodes[node.node_id] = self

    async def run(
        self, node: Node, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        self.attach(node)
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            # A node that stops serving is gone for the others at once.
            self.hub._nodes.pop(node.node_id, None)
            for name, room in list(self.hub._rooms.items()):
                room.nodes.pop(self, None)
                if not room.nodes:
                    del self.hub._rooms[name]
            self._node = None

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
        if not found.nodes:
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
        found = self.hub._rooms.get(envelope.room)
        if found is None:
            return Published(Position(secrets.token_urlsafe(6), 0), 0)
        found.seq += 1
        position = Position(found.epoch, found.seq)
        for adapter in found.nodes:
            if adapter._node is not None:
                adapter._node.deliver(envelope, position)
        return Published(position, len(found.nodes))

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
