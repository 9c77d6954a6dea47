"""The seam between one node of a bus and the other nodes: what an adapter does.

A bus is one or more *nodes* (server processes) that share rooms. Each node holds
its own connections; an :class:`Adapter` carries what must reach other nodes, and
is the authority for what must be decided once for all of them:

* **room messages**, numbered: :meth:`Adapter.publish` gives each message its
  room's next position ``[epoch, seq]``, atomically with handing it to every node
  that has members in the room (this node included), so that every member on every
  node sees the same, dense numbering;
* **signals**, unnumbered messages to the nodes of a room or to one node (an event
  for one connection, a request to call a room's members, the answers);
* **presence**: which connections are in a room, on any node, with a stated
  staleness bound after a node dies;
* **history**: each room's last messages at their positions, kept by the same
  atomic step that numbers them (a message is never numbered without being kept,
  nor kept without being numbered), read back for a resume or to repair what a
  node missed; and the publish ids already applied, so that a publish sent again
  after a resume applies once.

What an adapter receives goes to the :class:`Node` it serves (the bus's router),
which delivers it to local connections. Adapters carry :class:`Envelope` and
:class:`Signal` values; how they encode them is their own business (the
in-memory adapter passes the objects, the Redis adapter encodes them with msgpack
and a version number).

Adapters are I/O layers and may use trio; this module imports only the protocol.
``eventbus.testing.check_adapter`` is the conformance suite every adapter passes.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import attrs
import trio

from ..protocol import Position

__all__ = [
    "Adapter",
    "AdapterState",
    "Envelope",
    "HistoryBounds",
    "HistoryPage",
    "Member",
    "Node",
    "Published",
    "Signal",
    "SignalKind",
]


@attrs.frozen(slots=True)
class Envelope:
    """A room message on its way to the members of its room, on every node.

    Attributes:
        room: The room.
        event: The event name.
        data: The payload (any value of the data rules, PROTOCOL.md section 4.3).
        sender: The session whose connections must not receive it
            (broadcast-except-sender), or ``None``.
        delivery: ``"reliable"``, ``"volatile"`` or ``"latest"``.
        key: For ``latest``: messages with the same key supersede each other.
        publish_id: The sender's publish id: a room with history applies
            ``(sender, publish_id)`` once (PROTOCOL.md section 6.6).
    """

    room: str
    event: str
    data: Any = None
    sender: str | None = None
    delivery: str = "reliable"
    key: str | None = None
    publish_id: int | None = None


@attrs.frozen(slots=True)
class HistoryBounds:
    """How much of a room's history is kept: the last ``size`` messages, none older
    than ``age`` seconds, ``max_bytes`` of them at most (as the adapter counts a
    message's bytes: the size of its data in msgpack, at least)."""

    size: int
    age: float
    max_bytes: int


@attrs.frozen(slots=True)
class HistoryPage:
    """What :meth:`Adapter.history` read.

    Attributes:
        position: The room's current position (its epoch created if it is new).
        first: The seq of the oldest message history still holds in that epoch
            (``position.seq + 1`` when it holds none).
        messages: The messages after the seq asked for, oldest first, with their
            seqs; empty when the epoch asked for is not the current one.
    """

    position: Position
    first: int
    messages: Sequence[tuple[int, Envelope]]


@attrs.frozen(slots=True)
class Published:
    """What :meth:`Adapter.publish` did with a message.

    Attributes:
        position: The position the message took in its room (for a repeat of a
            publish id, the position the first one took).
        nodes: How many nodes it was handed to (the nodes with members in the room
            at that moment, this one included when it has any).
        kept: Whether the room's history keeps it.
        repeat: Whether it repeats a publish id already applied: nothing was sent.
    """

    position: Position
    nodes: int
    kept: bool = False
    repeat: bool = False


class SignalKind(enum.IntEnum):
    """What a :class:`Signal` asks of the node that receives it."""

    #: Deliver an event to one connection of this node: ``body`` is
    #: ``[sid, event, data, delivery, key]``.
    EVENT = 1
    #: Call the local members of a room (``room`` set) or one connection: ``body`` is
    #: ``[call_id, event, data, timeout, sid or None]``; answer with ``ANSWERS`` to
    #: ``reply_to``.
    CALL = 2
    #: The answers of one node to a ``CALL``: ``body`` is
    #: ``[call_id, {sid: data}, {sid: [code, message]}, [sid, ...]]``
    #: (answers, errors, timed out).
    ANSWERS = 3
    #: Another connection resumed the session of connection ``body[0]`` of this
    #: node: close it with 4004.
    TAKEOVER = 4


@attrs.frozen(slots=True)
class Signal:
    """An unnumbered message between nodes.

    Attributes:
        kind: What it asks for.
        sender: The node id it comes from.
        body: The kind's fields (see :class:`SignalKind`); plain data only.
        room: The room whose nodes it goes to, when it goes to a room's nodes.
    """

    kind: SignalKind
    sender: str
    body: Sequence[Any]
    room: str | None = None


@attrs.frozen(slots=True)
class Member:
    """A connection in a room, on some node."""

    sid: str
    node: str


class AdapterState(enum.Enum):
    """How an adapter stands with what it connects the node to."""

    #: Not started yet.
    IDLE = "idle"
    #: Connected: messages reach the other nodes.
    CONNECTED = "connected"
    #: Lost the connection, trying again; local rooms go on working.
    DISCONNECTED = "disconnected"


class Node(Protocol):
    """What an adapter hands its messages to: the router of a bus."""

    @property
    def node_id(self) -> str:
        """This node's id (unique among the nodes of the bus)."""

    def deliver(self, envelope: Envelope, position: Position) -> None:
        """Deliver a room message to this node's members of its room."""

    def receive_signal(self, signal: Signal) -> None:
        """Act on a signal from another node (or this one). Must not block."""

    def local_members(self, room: str) -> Sequence[str]:
        """The session ids of this node's members of ``room``."""

    def history_bounds(self, room: str) -> HistoryBounds | None:
        """How much history ``room`` keeps (``None``: none)."""

    def lost(self, room: str, count: int) -> None:
        """``count`` messages of ``room`` did not reach this node and cannot be read
        from history any more: its members are told (GAP)."""


class Adapter(abc.ABC):
    """The transport between the nodes of one bus.

    An adapter serves one node. The bus calls :meth:`run` once, in its own nursery,
    before anything else; every other method may be called from any task of the
    bus. Methods ending in ``_nowait`` never block and keep their order with each
    other (a node's room messages reach every node in the order it sent them).
    """

    @property
    @abc.abstractmethod
    def state(self) -> AdapterState:
        """Whether messages currently reach the other nodes."""

    def attach(self, node: Node) -> None:  # noqa: B027 - most adapters need nothing here
        """Called once when the bus is made, before :meth:`run`: an adapter that can
        deliver without running (the in-memory one) starts serving ``node`` here."""

    @abc.abstractmethod
    async def run(
        self, node: Node, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve ``node`` until cancelled; call ``task_status.started()`` once
        messages can flow (or once the first connection attempt failed: the
        adapter then keeps trying, and the node serves its local rooms)."""

    @abc.abstractmethod
    async def subscribe(self, room: str) -> Position:
        """Receive ``room``'s messages from now on (this node has a member in it).

        Returns:
            The room's current position, its epoch created if the room is new.

        Raises:
            eventbus.Unavailable: the adapter cannot reach the other nodes now (it
                still subscribes once it can).
        """

    @abc.abstractmethod
    def subscribe_nowait(self, room: str) -> None:
        """:meth:`subscribe` without waiting (for synchronous server code such as
        ``sock.join(room)``); messages published before the subscription is in
        place may not reach this node."""

    @abc.abstractmethod
    def unsubscribe_nowait(self, room: str) -> None:
        """This node's last member of ``room`` left (the adapter may linger)."""

    @abc.abstractmethod
    async def position(self, room: str) -> Position:
        """The room's current position, its epoch created if the room is new.

        Raises:
            eventbus.Unavailable: the adapter cannot reach the other nodes now.
        """

    @abc.abstractmethod
    async def publish(self, envelope: Envelope) -> Published:
        """Number a room message and hand it to every node subscribed to its room.

        Raises:
            eventbus.Unavailable: the message could not be published (the adapter
                is disconnected, or its queue is full); nothing was sent.
        """

    @abc.abstractmethod
    def publish_nowait(self, envelope: Envelope) -> Published | None:
        """:meth:`publish` without waiting: the result when it is known at once
        (the in-memory adapter), else ``None``.

        Raises:
            eventbus.Unavailable: as :meth:`publish`, when known at once.
        """

    @abc.abstractmethod
    async def signal(self, signal: Signal, *, node: str | None = None) -> int:
        """Send a signal to one node (``node``) or to the nodes of ``signal.room``.

        A signal never comes back to the node that sends it: a node acts on its own
        members directly.

        Returns:
            How many other nodes received it (0: no such node, or no other node
            has members).

        Raises:
            eventbus.Unavailable: as :meth:`publish`.
        """

    @abc.abstractmethod
    def signal_nowait(self, signal: Signal, *, node: str) -> bool | None:
        """:meth:`signal` to one node, without waiting for it to be sent.

        Returns:
            Whether the node received it, when that is known at once (the in-memory
            adapter), else ``None``.

        Raises:
            eventbus.Unavailable: as :meth:`publish_nowait`.
        """

    @abc.abstractmethod
    async def history(
        self, room: str, epoch: str, after: int, limit: int, bounds: HistoryBounds,
    ) -> HistoryPage:
        """Read ``room``'s history: at most ``limit`` messages after seq ``after`` of
        epoch ``epoch`` (none when that is not the current epoch), none older than
        ``bounds.age``.

        Raises:
            eventbus.Unavailable: the adapter cannot reach the history now.
        """

    def shared_secret(self) -> bytes | None:
        """A secret all nodes of the bus share (they sign resume tokens with it), or
        ``None`` while it is not known (then each node uses its own)."""
        return None

    @abc.abstractmethod
    def member_joined(self, room: str, sid: str) -> None:
        """Record that connection ``sid`` of this node is in ``room``."""

    @abc.abstractmethod
    def member_left(self, room: str, sid: str) -> None:
        """Record that connection ``sid`` of this node left ``room``."""

    @abc.abstractmethod
    async def members(self, room: str) -> list[Member]:
        """Every connection in ``room``, on every node that is alive.

        Raises:
            eventbus.Unavailable: the adapter cannot reach the other nodes now.
        """

    @abc.abstractmethod
    def statistics(self) -> Mapping[str, int | str]:
        """Counters for monitoring (messages lost to outages, reconnects, ...)."""
