"""The sans-IO core of the clients: everything a client decides, with no I/O.

The trio client (:mod:`eventbus.client.session`) and the asyncio client
(:mod:`eventbus.asyncio.client`) are thin I/O layers over this module, as the
websockets package's are over its protocol: they open connections, wait, and run
tasks; what a packet means, what to send, and what to remember across
connections is decided here, once, so that the two cannot drift apart.

* :class:`LinkCore`: one connection's codec, WELCOME, ack ids and token;
* :class:`SessionState`: what a client keeps across its connections: its rooms
  and their positions (PROTOCOL.md section 8), the session to resume and its
  generation, publish ids, the verdicts of the last RESUME;
* :func:`route`: what an incoming packet asks of the I/O layer, as a value;
* :func:`reconnect_verdict`: whether a close or a refused handshake ends the client.

Nothing here imports trio, asyncio or a socket library, nor reads a clock (a
run-time check in tests/client/test_core.py says so).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Container, Mapping
from types import MappingProxyType
from typing import Any

import attrs

from ..codes import CloseCode
from ..errors import (
    ConnectionClosed,
    EventBusError,
    HandshakeRejected,
    LocalProtocolError,
    RemoteProtocolError,
    error_from_code,
)
from ..protocol import (
    ACK_ID_MAX,
    SEQ_MAX,
    Ack,
    Codec,
    ErrorReply,
    Event,
    Gap,
    Packet,
    Position,
    RoomEvent,
    Welcome,
)
from .backoff import Backoff
from .messages import Incoming, Recovery

__all__ = [
    "NO_RECONNECT_CLOSE_CODES",
    "Answered",
    "Direct",
    "Failed",
    "GapReport",
    "LinkCore",
    "Nothing",
    "RoomDelivery",
    "Routed",
    "ServerError",
    "SessionState",
    "position_from",
    "reconnect_verdict",
    "recovery_from",
    "route",
]

_REPEATS = "; reconnecting would repeat it"
#: The close codes after which the client stops instead of reconnecting, with why
#: (PROTOCOL.md section 14). After any other close, and after a connection lost
#: without a close frame (1006), it reconnects with backoff. The codes that mean
#: this client broke the protocol stop it too: a reconnection would break it the
#: same way, and a buggy client would become a reconnection loop. eventbus.js
#: stops after the same codes (its FINAL_CLOSE_CODES).
NO_RECONNECT_CLOSE_CODES: Mapping[int, str] = MappingProxyType({
    CloseCode.NORMAL: "the server's application closed the connection on purpose",
    CloseCode.PROTOCOL_ERROR: "this client broke the WebSocket framing rules" + _REPEATS,
    CloseCode.INVALID_DATA: "this client sent a text frame that is not UTF-8" + _REPEATS,
    CloseCode.MESSAGE_TOO_BIG: "this client sent a message over max_frame" + _REPEATS,
    CloseCode.TOO_MANY_ERRORS: "this client sent too many invalid packets" + _REPEATS,
    CloseCode.UNAUTHORIZED: "the server revoked the authorization; get new credentials",
    CloseCode.SESSION_TAKEN_OVER: "another connection resumed this session",
})


def reconnect_verdict(backoff: Backoff | None, error: ConnectionClosed | HandshakeRejected,
                      failures: int = 0) -> str | None:
    """Why not to reconnect after ``error`` (the ``failures``-th in a row), or
    ``None`` to reconnect."""
    if backoff is None:
        return "reconnection is off"
    if isinstance(error, HandshakeRejected):
        if 400 <= error.status < 500 and error.status not in (408, 429):
            return f"the server refused the handshake ({error})"
    else:
        code = error.close_code
        verdict = NO_RECONNECT_CLOSE_CODES.get(code) if code is not None else None
        if verdict is not None:
            return verdict
    if backoff.gives_up(failures):
        return f"gave up after {failures} attempts"
    return None


def position_from(value: Any) -> Position | None:
    """A ``[epoch, seq]`` from the wire, or ``None`` if it is not one."""
    if (type(value) is list and len(value) == 2 and type(value[0]) is str
            and type(value[1]) is int):
        return Position(value[0], value[1])
    return None


def recovery_from(room: str, verdict: Mapping[str, Any]) -> Recovery:
    """A room's verdict of a RESUME answer (PROTOCOL.md section 9.4)."""
    recovered = verdict.get("recovered") is True
    replayed = verdict.get("replayed")
    reason = verdict.get("reason")
    return Recovery(
        room, recovered, replayed if type(replayed) is int and recovered else 0,
        None if recovered else reason if isinstance(reason, str) else "unknown",
        position_from(verdict.get("position")))


# --- one connection ------------------------------------------------------------------------


class LinkCore:
    """What a client knows of one connection: its codec, WELCOME, ack ids and the
    latest resume token the server gave it.

    Attributes:
        codec: The negotiated codec (``Role.CLIENT``).
        welcome: The server's WELCOME.
        token: The latest resume token (the WELCOME's, then each ``$resume_token``).
        generation: The client's session generation this connection serves, once
            it is ready (see :attr:`SessionState.generation`).
    """

    def __init__(self, codec: Codec, welcome: Welcome) -> None:
        self.codec = codec
        self.welcome = welcome
        self.token = welcome.resume_token
        self.generation = 0
        self._next_id = 1

    @property
    def max_pending(self) -> int:
        """Requests that may await an answer at once (0: no limit)."""
        return self.welcome.options.max_pending

    def allocate(self, pending: Container[int]) -> int:
        """A fresh ack id: counting up from 1, wrapping, skipping ids in ``pending``."""
        ack_id = self._next_id
        while ack_id in pending:
            ack_id = ack_id % ACK_ID_MAX + 1
        self._next_id = ack_id % ACK_ID_MAX + 1
        return ack_id

    def encode(self, packet: Packet) -> bytes:
        """Encode a packet for this connection, refusing what the server would refuse.

        Raises:
            LocalProtocolError: the packet cannot be encoded with this codec (binary
                data under JSON, NaN...) or is larger than the server's ``max_frame``;
                nothing was sent.
        """
        payload = self.codec.encode(packet)
        limit = self.welcome.options.max_frame
        if len(payload) > limit:
            raise LocalProtocolError(
                f"{type(packet).__name__} of {len(payload)} bytes exceeds the server's "
                f"max_frame of {limit} bytes"
            )
        return payload

    def message(self, payload: bytes) -> str | bytes:
        """What to send for an encoded packet: text for JSON, binary for msgpack."""
        return payload if self.codec.binary else payload.decode("utf-8")


def read_welcome(codec: Codec, message: str | bytes, target: str) -> Welcome:
    """The WELCOME a connection must start with.

    Raises:
        ConnectionClosed: the first packet is not a valid WELCOME.
    """
    try:
        welcome = codec.decode(message)
    except RemoteProtocolError as exc:
        raise ConnectionClosed(f"{target} sent an invalid welcome: {exc}") from exc
    if not isinstance(welcome, Welcome):
        raise ConnectionClosed(f"{target} sent {type(welcome).__name__} before its welcome")
    return welcome


# --- what an incoming packet asks for -----------------------------------------------------


@attrs.frozen
class RoomDelivery:
    """A room event to hand to the subscriptions of its room and to its handler."""

    incoming: Incoming


@attrs.frozen
class Direct:
    """A direct event: run its handler; with an ack id, answer it (a server call)."""

    incoming: Incoming
    ack_id: int | None


@attrs.frozen
class Answered:
    """The ACK of request ``ack_id``."""

    ack_id: int
    data: Any


@attrs.frozen
class Failed:
    """The ERROR answering request ``ack_id``."""

    ack_id: int
    error: EventBusError


@attrs.frozen
class ServerError:
    """An ERROR that answers no request (about a packet sent without an ack id)."""

    error: EventBusError


@attrs.frozen
class GapReport:
    """The server dropped ``count`` messages of ``room`` (``None``: direct events)."""

    room: str | None
    count: int


@attrs.frozen
class Nothing:
    """Nothing for the I/O layer to do (a repeat dropped, a token kept...)."""

    why: str


Routed = RoomDelivery | Direct | Answered | Failed | ServerError | GapReport | Nothing


def route(state: SessionState, link: LinkCore, packet: Packet, *, ready: bool) -> Routed:
    """What ``packet``, read on ``link``, asks of the client; updates ``state``
    (positions, repeats, GAP counts, the token). ``ready``: whether ``link`` is the
    client's current, set-up connection (a token it gets is the one to resume with).
    """
    if isinstance(packet, RoomEvent):
        room = packet.room
        if state.is_repeat(packet):
            return Nothing("a room event seen already")
        state.record_position(room, packet.position)
        return RoomDelivery(Incoming(room, packet.event, packet.data, packet.epoch,
                                     packet.seq))
    if isinstance(packet, Ack):
        return Answered(packet.ack_id, packet.data)
    if isinstance(packet, ErrorReply):
        error = error_from_code(packet.code, packet.message)
        if packet.ack_id is None:
            return ServerError(error)
        return Failed(packet.ack_id, error)
    if isinstance(packet, Event):
        if (packet.event == "$resume_token" and packet.ack_id is None
                and isinstance(packet.data, str)):
            link.token = packet.data  # the client's own business, not the app's
            if ready:
                state.previous = (link.welcome.sid, link.token)
            return Nothing("a fresh resume token")
        return Direct(Incoming(None, packet.event, packet.data), packet.ack_id)
    if isinstance(packet, Gap):
        state.missed += packet.count
        return GapReport(packet.room, packet.count)
    return Nothing(f"an unexpected {type(packet).__name__}")


# --- across connections ---------------------------------------------------------------------


class SessionState:
    """What a client keeps across its connections."""

    def __init__(self) -> None:
        #: Rooms joined with ``join`` (until ``leave``).
        self.explicit: set[str] = set()
        #: Rooms held by subscriptions, with how many hold each.
        self.held: Counter[str] = Counter()
        #: The last position seen per room (PROTOCOL.md section 8).
        self.positions: dict[str, Position] = {}
        #: The sid and token of the last connection that was set up: what the next
        #: one resumes (PROTOCOL.md section 9).
        self.previous: tuple[str, str] | None = None
        #: Counts the server sessions this client has had: a publish is sent again
        #: after a lost answer only within one (its publish id means nothing in
        #: another).
        self.generation = 0
        #: The verdicts of the last RESUME, by room.
        self.recoveries: dict[str, Recovery] = {}
        self.duplicates = 0
        self.missed = 0
        self._next_publish_id = 1

    @property
    def rooms(self) -> frozenset[str]:
        """The rooms the client is in (joined, or held by a subscription)."""
        return frozenset(self.explicit) | frozenset(self.held)

    def record_position(self, room: str, position: Position) -> None:
        """Record ``position`` as the last one seen in ``room``: within an epoch only
        a higher seq replaces it (a ROOM_EVENT may arrive ahead of the ACK of an
        earlier position); a new epoch replaces it. A room the client is no longer
        in is not recorded: RESUME must not name it."""
        if room not in self.rooms:
            return
        known = self.positions.get(room)
        if known is None or known.epoch != position.epoch or known.seq < position.seq:
            self.positions[room] = position

    def is_repeat(self, packet: RoomEvent) -> bool:
        """Whether a room event was seen already, or comes before where the client
        joined (the client's second guard; the server sends no repeat)."""
        known = self.positions.get(packet.room)
        if known is not None and known.epoch == packet.epoch and packet.seq <= known.seq:
            self.duplicates += 1
            return True
        return False

    def drop_room(self, room: str) -> None:
        """The client is no longer in ``room`` (the server refused it)."""
        self.explicit.discard(room)
        self.held.pop(room, None)
        self.positions.pop(room, None)

    def new_publish_id(self) -> int:
        """A publish id never used before by this client (PROTOCOL.md section 6.6)."""
        publish_id = self._next_publish_id
        self._next_publish_id = publish_id % SEQ_MAX + 1
        return publish_id

    def link_ready(self, link: LinkCore) -> None:
        """``link`` is set up (resumed or not): the next connection resumes it."""
        link.generation = self.generation
        self.previous = (link.welcome.sid, link.token)

    # --- resuming ---------------------------------------------------------------------

    def resume_positions(self) -> tuple[list[str], dict[str, Position]]:
        """The rooms to get back, and the positions a RESUME names (those the client
        has a position in)."""
        rooms = sorted(self.rooms)
        return rooms, {room: self.positions[room] for room in rooms if room in self.positions}

    def resume_refused(self, rooms: list[str]) -> dict[str, Recovery]:
        """The server refused the RESUME: a new session, every room joined afresh."""
        self.generation += 1
        return {room: Recovery(room, False, reason="resume_failed") for room in rooms}

    def resumed(self, answer: Any, positions: Mapping[str, Position]) -> tuple[
            dict[str, Recovery], list[str], list[str]]:
        """Take in a RESUME's answer.

        Returns:
            The verdicts by room; the rooms to JOIN again (no position in the
            answer: ``unavailable``, or no verdict at all); the rooms to LEAVE
            (left while the RESUME was on its way).
        """
        verdicts: dict[str, Recovery] = {}
        again: list[str] = []
        for room, verdict in (answer.items() if isinstance(answer, dict) else ()):
            if room not in positions or not isinstance(verdict, dict):
                continue
            recovery = recovery_from(room, verdict)
            verdicts[room] = recovery
            if recovery.position is not None:
                self.record_position(room, recovery.position)
            elif recovery.reason == "unavailable":
                again.append(room)
            else:
                self.drop_room(room)  # forbidden, too_many_rooms: not in it any more
        again += [room for room in positions if room not in verdicts]
        left = [room for room, recovery in verdicts.items()
                if room not in self.rooms and recovery.position is not None]
        return verdicts, again, left

    def rejoined(self, verdicts: dict[str, Recovery], joined: Mapping[str, Position]) -> None:
        """Rooms joined again after a RESUME: their verdicts say where they stand;
        then these are the client's :attr:`recoveries`."""
        for room, position in joined.items():
            if room in verdicts:
                verdicts[room] = attrs.evolve(verdicts[room], position=position)
        self.recoveries = verdicts

    def may_send_again(self, room: str, sent_on: int) -> str | None:
        """Whether a publish to ``room`` sent on a connection of generation
        ``sent_on``, unanswered, may be sent again now; ``None`` if so, else why not."""
        if sent_on != self.generation:
            return "the server started a new session"
        recovery = self.recoveries.get(room)
        if recovery is not None and not recovery.recovered:
            # A publish id holds only while its first message is in the room's
            # history: no history, or history that moved on, could apply it twice.
            if recovery.reason == "history_off":
                return "the room keeps no history"
            return f"the room was not recovered ({recovery.reason})"
        return None
