"""Where a message goes: to a room on every node, to one connection on any node,
or to the members a call asks; and how it reaches this node's connections.

The path of a room message: the app or a client publishes it; the router checks
its data once and hands an :class:`~eventbus.adapters.Envelope` to the adapter;
the adapter numbers it (the room's next position, decided once for all nodes)
and hands it to every node with members in the room; each node's router then
delivers it locally (:meth:`Router.deliver`), encoding it at most once per codec
and writing the same bytes to every member but the sender.

Direct events and calls to a connection of another node, and calls to a room's
members on other nodes, travel as :class:`~eventbus.adapters.Signal` values.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ..adapters import Adapter, Envelope, HistoryBounds, Published, Signal, SignalKind
from ..codes import CloseCode
from ..errors import (
    CallTimeout,
    ConnectionClosed,
    LocalProtocolError,
    RequestError,
    Unavailable,
    error_from_code,
)
from ..protocol import (
    MAX_DEPTH,
    DataError,
    ErrorReply,
    Event,
    Gap,
    JsonCodec,
    MsgpackCodec,
    Packet,
    Position,
    RoomEvent,
    check_data,
)
from ..protocol.wsframe import server_frame
from .history import HistoryPolicy
from .metrics import Metrics
from .outbox import Delivery
from .rooms import RoomRegistry

if TYPE_CHECKING:
    from .connection import Connection

__all__ = ["CallResults", "Router"]

logger = logging.getLogger("eventbus.server")

# The wire code standing for "the connection closed" in a node's answers to a call.
_CLOSED = "$closed"
# How long past a call's timeout the caller waits for other nodes to report.
_REPORT_GRACE = 1.0


@attrs.frozen
class CallResults:
    """What :meth:`EventBus.call <eventbus.EventBus.call>` collected, by session id.

    Attributes:
        answers: The ack data of every client that answered.
        errors: The error of every client that answered with one, or closed.
        timed_out: The clients that did not answer in time.
        missing_nodes: The nodes with members in the room that did not report
            their members' answers in time, or could not be asked (a node that died
            is named until its liveness lapses); their members are in none of the
            above. By node id where known, else ``"?"`` for each.
    """

    answers: Mapping[str, Any]
    errors: Mapping[str, Exception]
    timed_out: Sequence[str]
    missing_nodes: Sequence[str] = ()


class _PendingCall:
    __slots__ = ("answered", "done", "expected", "results")

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.answered: set[str] = set()
        self.results: list[CallResults] = []
        self.done = trio.Event()


class Router:
    """The routing of one node; the adapter's :class:`~eventbus.adapters.Node`.

    Args:
        adapter: How this node reaches the others.
        connections: This node's open connections, by sid (owned by the bus).
        json: The JSON codec of the bus.
        msgpack: The msgpack codec of the bus.
    """

    def __init__(
        self, adapter: Adapter, connections: Mapping[str, Connection], json: JsonCodec,
        msgpack: MsgpackCodec,
    ) -> None:
        self.adapter = adapter
        self._connections = connections
        self._json = json
        self._msgpack = msgpack
        # 8 characters that start every sid of this node, so that any node can tell
        # where a connection lives from its sid alone.
        self._node_id = secrets.token_hex(4)
        self.rooms: RoomRegistry[Connection] = RoomRegistry()
        self._calls: dict[int, _PendingCall] = {}
        self._next_call = 1
        self._sent = 0
        #: Runs calls to this node's members on behalf of other nodes.
        self.nursery: trio.Nursery | None = None
        #: The bus's counts (set by the bus; None when metrics are off).
        self.metrics: Metrics | None = None
        #: Which rooms keep history (set by the bus).
        self.history = HistoryPolicy(0, 1.0, 1)

    # --- the adapter's Node ------------------------------------------------------------

    @property
    def node_id(self) -> str:
        return self._node_id

    def new_sid(self) -> str:
        """A session id for a new connection of this node."""
        return self._node_id + secrets.token_urlsafe(12)

    def deliver(self, envelope: Envelope, position: Position) -> None:
        """Deliver a room message to this node's members of its room."""
        room = self.rooms.get(envelope.room)
        if room is None:
            return
        room.position = position
        packet = RoomEvent(envelope.room, envelope.event, envelope.data, position.epoch,
                           position.seq)
        # Members that just resumed skip what their replay already sent.
        members = room.unfenced(position) if room.fences else room.members
        try:
            # The data was checked once, by the node that published it (envelope()).
            self._sent = self._fan_out(packet, members, envelope.sender,
                                       Delivery(envelope.delivery), envelope.room,
                                       envelope.key, checked=True)
        except (ValueError, LocalProtocolError) as exc:
            # From a node of another version, say (an unknown delivery policy): that
            # message is lost here, and said so; the node goes on.
            logger.warning("could not deliver a message of room %r: %s", envelope.room, exc)

    def receive_signal(self, signal: Signal) -> None:
        kind = signal.kind
        try:
            if kind is SignalKind.EVENT:
                sid, event, data, delivery, key = signal.body
                conn = self._connections.get(sid)
                if conn is not None and not conn.closed:
                    conn.emit(event, data, delivery=delivery, key=key)
            elif kind is SignalKind.CALL:
                if self.nursery is not None:
                    self.nursery.start_soon(self._answer_call, signal)
            elif kind is SignalKind.ANSWERS:
                self._collect_answers(signal)
            elif kind is SignalKind.TAKEOVER:
                self.take_over(str(signal.body[0]))
        except (ValueError, TypeError, LocalProtocolError) as exc:
            # A node of another version, or a bug: never a crash of this one.
            logger.warning("ignored a %s signal from node %s: %s", kind.name, signal.sender, exc)

    def local_members(self, room: str) -> Sequence[str]:
        found = self.rooms.get(room)
        return [conn.sid for conn in (*found.members, *found.waiting)] if found is not None else []

    def history_bounds(self, room: str) -> HistoryBounds | None:
        return self.history.bounds(room)

    def lost(self, room: str, count: int) -> None:
        found = self.rooms.get(room)
        if found is None or count <= 0:
            return
        for conn in found.members:
            conn.send_frame(conn.frame(Gap(room, count)), Delivery.RELIABLE, None, None)
        if self.metrics is not None:
            self.metrics.gaps["reliable"] += len(found.members)

    def take_over(self, sid: str) -> bool:
        """Another connection resumed the session of connection ``sid``: close it
        with 4004, on whichever node it is; whether it is known to be there."""
        conn = self._connections.get(sid)
        if conn is not None:
            conn.close(CloseCode.SESSION_TAKEN_OVER, "another connection resumed this session")
            return True
        node = sid[:len(self._node_id)]
        if node == self._node_id or len(sid) <= len(node):
            return False
        try:
            return self.adapter.signal_nowait(
                Signal(SignalKind.TAKEOVER, self._node_id, [sid]), node=node) is not False
        except Unavailable:
            return False  # that node, cut off from this one, cannot be told; it may be gone

    # --- room messages -----------------------------------------------------------------

    def envelope(
        self, room: str, event: str, data: Any, sender: Connection | None, delivery: Delivery,
        key: str | None, publish_id: int | None = None,
    ) -> Envelope:
        """A room message, its data checked once here for every node and codec.

        Raises:
            LocalProtocolError: the data breaks the data rules.
        """
        try:
            check_data(data, allow_bytes=True, depth=MAX_DEPTH)
        except DataError as exc:
            raise LocalProtocolError(f"cannot send event {event!r}: {exc}") from None
        return Envelope(room, event, data, sender.session if sender is not None else None,
                        delivery.value, key, publish_id)

    def publish_nowait(self, envelope: Envelope) -> int:
        """Send a room message without waiting.

        Returns:
            How many of this node's connections it was handed to: at once with the
            in-memory adapter; with one that delivers later, how many it will be.
        """
        self._sent = 0
        published = self.adapter.publish_nowait(envelope)
        if published is not None:
            return self._sent
        found = self.rooms.get(envelope.room)
        if found is None:
            return 0
        return sum(1 for conn in found.members if conn.session != envelope.sender)

    async def publish(self, envelope: Envelope) -> Published:
        """Send a room message; returns its position and how many nodes had it."""
        return await self.adapter.publish(envelope)

    def emit_all(self, event: str, data: Any, skip: Connection | None, delivery: Delivery,
                 key: str | None) -> int:
        """An event to every connection of this node."""
        return self._fan_out(Event(event, data), self._connections.values(),
                             skip.session if skip is not None else None, delivery, None, key)

    def emit_to_sid(self, sid: str, event: str, data: Any, delivery: Delivery,
                    key: str | None) -> bool:
        """An event to one connection, on this node or another one; ``False`` when
        it is known at once that there is no such connection."""
        conn = self._connections.get(sid)
        if conn is not None:
            if not conn.open:
                return False
            conn.emit(event, data, delivery=delivery, key=key)
            return True
        node = sid[:len(self._node_id)]
        if node == self._node_id or len(sid) <= len(node):
            return False
        signal = Signal(SignalKind.EVENT, self._node_id, [sid, event, data, delivery.value, key])
        # Unknown (None) with an adapter that sends later: counted as handed over.
        return self.adapter.signal_nowait(signal, node=node) is not False

    def _fan_out(
        self, packet: Packet, targets: Iterable[Connection], skip: str | None,
        delivery: Delivery, room: str | None, key: str | None, *, checked: bool = False,
    ) -> int:
        # Encoded lazily, at most once per codec, and the same bytes for everyone.
        binary_frame: bytes | None = None
        text_frame: bytes | None = None
        sent = binary = 0
        for conn in targets:
            if conn.session == skip:
                continue
            if conn.binary:
                if binary_frame is None:
                    binary_frame = server_frame(
                        self._msgpack.encode(packet, checked=checked), binary=True)
                conn.send_frame(binary_frame, delivery, room, key)
                binary += 1
            else:
                if text_frame is None:
                    text_frame = self._text_frame(packet, checked)
                conn.send_frame(text_frame, delivery, room, key)
            sent += 1
        metrics = self.metrics
        if metrics is not None and sent:
            # Counted once per broadcast, not once per member.
            kind = type(packet)
            if binary:
                metrics.sent["msgpack"][kind] += binary
            if sent - binary:
                metrics.sent["json"][kind] += sent - binary
            if room is not None:
                metrics.deliveries[delivery.value] += sent
        return sent

    def room_frame(self, conn: Connection, packet: RoomEvent) -> bytes:
        """The frame of a room message for one connection (a replay), as
        :meth:`_fan_out` would send it."""
        counts = self.metrics.sent["msgpack" if conn.binary else "json"] if self.metrics else None
        if counts is not None:
            counts[RoomEvent] += 1
        if conn.binary:
            return server_frame(self._msgpack.encode(packet, checked=True), binary=True)
        return self._text_frame(packet, True)

    def _text_frame(self, packet: Packet, checked: bool) -> bytes:
        """The JSON frame of ``packet``; for data JSON cannot carry, an ERROR saying
        so and, for a room message, a GAP for its room, so that a program knows
        which room lost a message (PROTOCOL.md section 4.5)."""
        try:
            return server_frame(self._json.encode(packet, checked=checked), binary=False)
        except LocalProtocolError:
            where = f" in room {packet.room!r}" if isinstance(packet, RoomEvent) else ""
            name = packet.event if isinstance(packet, Event | RoomEvent) else "?"
            note = ErrorReply(
                None, "unencodable",
                f"event {name!r}{where} carries binary data, which JSON cannot carry;"
                " it was not delivered to this connection (use the msgpack codec)",
            )
            frames = server_frame(self._json.encode(note), binary=False)
            if isinstance(packet, RoomEvent):
                frames += server_frame(self._json.encode(Gap(packet.room, 1)), binary=False)
            return frames

    # --- membership --------------------------------------------------------------------

    async def join(self, conn: Connection, room: str) -> Position:
        """Add a connection to a room; returns the room's authoritative position.

        Raises:
            Unavailable: the adapter cannot reach the other nodes now; the
                connection is not in the room.
        """
        added = self._add(conn, room)
        try:
            if added:
                position = await self.adapter.subscribe(room)
            else:
                position = await self.adapter.position(room)
        except BaseException:
            if added:
                self.leave(conn, room)  # all or nothing: not half in the room
            raise
        self._update_position(room, position)
        return position

    def _update_position(self, room: str, position: Position) -> None:
        """What the adapter says of a room's position, once this node is subscribed
        to it: the node's record of the room moves to it (deliveries move it on)."""
        found = self.rooms.get(room)
        if found is not None and (found.position is None or found.position.epoch != position.epoch
                                  or found.position.seq < position.seq):
            found.position = position

    async def join_waiting(self, conn: Connection, room: str) -> Position:
        """Add a resuming connection to a room without live messages yet (see
        :meth:`go_live`); returns the room's position once this node is subscribed.

        Raises:
            Unavailable: as :meth:`join`; the connection is not in the room.
        """
        if room in conn.rooms:
            self.leave(conn, room)  # joined by the app meanwhile: the replay decides now
        conn.rooms.add(room)
        new = room not in self.rooms
        self.rooms.join(room, conn, waiting=True)
        self.adapter.member_joined(room, conn.sid)
        try:
            position = await (self.adapter.subscribe(room) if new
                              else self.adapter.position(room))
        except BaseException:
            self.leave(conn, room)
            raise
        self._update_position(room, position)
        return position

    def go_live(self, conn: Connection, room: str, fence: Position | None) -> bool:
        """A connection added by :meth:`join_waiting` gets the room's live messages
        past ``fence`` from now on; whether it is still in the room."""
        return self.rooms.go_live(room, conn, fence)

    def join_nowait(self, conn: Connection, room: str) -> None:
        """Add a connection to a room from synchronous server code. With an adapter
        that subscribes over the network, messages published before the
        subscription is in place do not reach the room's first member here."""
        if self._add(conn, room):
            self.adapter.subscribe_nowait(room)

    def _add(self, conn: Connection, room: str) -> bool:
        """Record a membership; whether the room is new on this node."""
        if room in conn.rooms:
            return False
        conn.rooms.add(room)
        new = room not in self.rooms
        self.rooms.join(room, conn)
        self.adapter.member_joined(room, conn.sid)
        return new

    def leave(self, conn: Connection, room: str) -> None:
        if room not in conn.rooms:
            return
        conn.rooms.discard(room)
        self._remove(conn, room)

    def detach(self, conn: Connection) -> None:
        """A connection ended: out of every room, though ``conn.rooms`` keeps them."""
        for room in conn.rooms:
            self._remove(conn, room)

    def _remove(self, conn: Connection, room: str) -> None:
        self.rooms.leave(room, conn)
        self.adapter.member_left(room, conn.sid)
        if room not in self.rooms:
            self.adapter.unsubscribe_nowait(room)

    # --- calls ----------------------------------------------------------------------------

    async def call(
        self, event: str, data: Any, *, room: str | None, conn: Connection | None,
        sid: str | None, timeout: float,
    ) -> CallResults:
        """Ask a room's members on every node, one connection, or one sid."""
        answers: dict[str, Any] = {}
        errors: dict[str, Exception] = {}
        timed_out: list[str] = []
        if conn is None and sid is not None:
            conn = self._connections.get(sid)
        if conn is not None:
            await _ask([conn], event, data, timeout, answers, errors, timed_out)
            return CallResults(answers, errors, timed_out)
        call_id = self._next_call
        self._next_call += 1
        target_node: str | None = None
        if room is None:
            assert sid is not None
            target_node = sid[:len(self._node_id)]
            if target_node == self._node_id:
                errors[sid] = ConnectionClosed(f"no connection {sid}")
                return CallResults(answers, errors, timed_out)
        signal = Signal(SignalKind.CALL, self._node_id, [call_id, event, data, timeout, sid],
                        room=room)
        pending = self._calls[call_id] = _PendingCall(0)
        try:
            pending.expected = await self.adapter.signal(signal, node=target_node)
            if sid is not None and pending.expected == 0:
                errors[sid] = ConnectionClosed(f"no connection {sid}")
            local = self.rooms.get(room) if room is not None else None
            if local is not None:
                await _ask(list(local.members), event, data, timeout, answers, errors, timed_out)
            if len(pending.results) < pending.expected:
                with trio.move_on_after(timeout + _REPORT_GRACE):
                    await pending.done.wait()
        finally:
            del self._calls[call_id]
        for result in pending.results:
            answers.update(result.answers)
            errors.update(result.errors)
            timed_out.extend(result.timed_out)
        return CallResults(answers, errors, timed_out,
                           await self._missing_nodes(room, pending))

    async def _missing_nodes(self, room: str | None, pending: _PendingCall) -> list[str]:
        """The nodes that did not report: those that had the request and did not
        answer in time, and those that presence says have members in the room but
        did not even receive it (a node that died, until its liveness lapses)."""
        unanswered = pending.expected - len(pending.results)
        if room is None:
            return ["?"] * unanswered
        known: list[str] = []
        with trio.move_on_after(_REPORT_GRACE):
            nodes = {member.node for member in await self.adapter.members(room)}
            known = sorted(nodes - pending.answered - {self._node_id})
        return known + ["?"] * max(0, unanswered - len(known))

    async def _answer_call(self, signal: Signal) -> None:
        call_id, event, data, timeout, sid = signal.body
        answers: dict[str, Any] = {}
        errors: dict[str, Exception] = {}
        timed_out: list[str] = []
        if sid is not None:
            conn = self._connections.get(sid)
            targets = [conn] if conn is not None else []
            if conn is None:
                errors[sid] = ConnectionClosed(f"no connection {sid}")
        else:
            found = self.rooms.get(signal.room or "")
            targets = list(found.members) if found is not None else []
        await _ask(targets, event, data, float(timeout), answers, errors, timed_out)
        wire_errors = {
            member: [error.code if isinstance(error, RequestError) else _CLOSED, _message(error)]
            for member, error in errors.items()
        }
        reply = Signal(SignalKind.ANSWERS, self._node_id,
                       [call_id, answers, wire_errors, timed_out])
        try:
            self.adapter.signal_nowait(reply, node=signal.sender)
        except Unavailable as exc:
            # The caller names this node as missing; this node must go on.
            logger.warning("could not report answers to call %s of node %s: %s",
                           call_id, signal.sender, exc.message)

    def _collect_answers(self, signal: Signal) -> None:
        call_id, answers, wire_errors, timed_out = signal.body
        pending = self._calls.get(call_id)
        if pending is None or signal.sender in pending.answered:
            return  # a late report, for a call that gave up on it
        errors: dict[str, Exception] = {
            member: ConnectionClosed(message) if code == _CLOSED
            else error_from_code(code, message)
            for member, (code, message) in wire_errors.items()
        }
        pending.answered.add(signal.sender)
        pending.results.append(CallResults(dict(answers), errors, list(timed_out)))
        if len(pending.results) >= pending.expected:
            pending.done.set()


async def _ask(
    targets: list[Connection], event: str, data: Any, timeout: float, answers: dict[str, Any],
    errors: dict[str, Exception], timed_out: list[str],
) -> None:
    async def ask(conn: Connection) -> None:
        try:
            answers[conn.sid] = await conn.call(event, data, timeout=timeout)
        except CallTimeout:
            timed_out.append(conn.sid)
        except (RequestError, ConnectionClosed) as exc:
            errors[conn.sid] = exc

    async with trio.open_nursery() as nursery:
        for conn in targets:
            nursery.start_soon(ask, conn)


def _message(error: Exception) -> str:
    return error.message if isinstance(error, RequestError) else str(error.args[0] if error.args
                                                                      else "connection closed")
