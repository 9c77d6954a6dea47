"""The packets of protocol v1 and the rules every field obeys.

A packet travels as a small array whose first element is its :class:`PacketType`.
Each class here is a frozen value with ``to_wire()``; :class:`PacketParser` turns a
decoded array back into a packet, checking every rule in ``protocol/PROTOCOL.md``
and raising :class:`~eventbus.errors.RemoteProtocolError` with the matching code.

Nothing here knows about sockets, frames or a clock.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeAlias

import attrs

from ..codes import ErrorCode
from ..errors import RemoteProtocolError

__all__ = [
    "ACK_ID_MAX",
    "INT_MAX",
    "INT_MIN",
    "MAX_DEPTH",
    "MAX_ELEMENTS",
    "NAME_MAX_BYTES",
    "SEQ_MAX",
    "Ack",
    "DataError",
    "Emit",
    "ErrorReply",
    "Event",
    "Gap",
    "Join",
    "Leave",
    "Packet",
    "PacketParser",
    "PacketType",
    "Position",
    "Publish",
    "Resume",
    "Role",
    "RoomEvent",
    "Welcome",
    "WelcomeOptions",
    "check_data",
    "check_name",
    "salvage_ack_id",
]

#: Ack ids are positive and fit in a signed 32-bit integer.
ACK_ID_MAX = 2**31 - 1
#: The protocol's ceiling for event and room names, in UTF-8 bytes. A server may
#: advertise a lower ``max_name`` in its welcome.
NAME_MAX_BYTES = 128
#: Arrays and maps in event data nest at most this deep.
MAX_DEPTH = 32
#: Integers in data must fit in int64 or uint64 (msgpack's range).
INT_MIN = -(2**63)
INT_MAX = 2**64 - 1
#: Sequence numbers and counts stay exact in IEEE doubles (JavaScript numbers).
SEQ_MAX = 2**53 - 1
#: Values one message's data may hold by default (see ``max_elements``): checking a
#: value costs the receiver Python work, so a message's cost must have a ceiling.
MAX_ELEMENTS = 10_000

# Control characters (C0, DEL, C1) and lone surrogates are never part of a name.
_BAD_NAME_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,64}")
_EPOCH = re.compile(r"[\x21-\x7e]{1,64}")
_CODE = re.compile(r"[a-z][a-z0-9_]{0,63}")


class PacketType(enum.IntEnum):
    """The first element of every packet."""

    WELCOME = 0  #: server → client, first packet of every connection
    EMIT = 1  #: client → server, an event for the server's handlers
    EVENT = 2  #: server → client, an event addressed to this connection
    ROOM_EVENT = 3  #: server → client, an event delivered through a room
    JOIN = 4  #: client → server
    LEAVE = 5  #: client → server
    PUBLISH = 6  #: client → server, to every member of a room but the sender
    ACK = 7  #: both directions, the answer to a request
    ERROR = 8  #: both directions, an error answer or a protocol complaint
    GAP = 9  #: server → client, messages dropped for this connection
    RESUME = 10  #: client → server, take over a previous session's rooms


# Plain ints for the wire: encoders need not know about enums.
_ACK = int(PacketType.ACK)
_EMIT = int(PacketType.EMIT)
_ERROR = int(PacketType.ERROR)
_EVENT = int(PacketType.EVENT)
_GAP = int(PacketType.GAP)
_JOIN = int(PacketType.JOIN)
_LEAVE = int(PacketType.LEAVE)
_PUBLISH = int(PacketType.PUBLISH)
_RESUME = int(PacketType.RESUME)
_ROOM_EVENT = int(PacketType.ROOM_EVENT)
_WELCOME = int(PacketType.WELCOME)


class Role(enum.Enum):
    """Which end of the connection a codec works for."""

    CLIENT = "client"
    SERVER = "server"


@attrs.frozen(slots=True)
class WelcomeOptions:
    """Settings the server announces in its welcome; times in milliseconds.

    ``rate`` and ``burst`` describe the inbound token bucket: ``rate`` packets per
    second on average, up to ``burst`` at once; ``rate == 0`` means no limit.
    """

    ping_interval: int = 25_000
    ping_timeout: int = 20_000
    max_frame: int = 1_048_576
    max_name: int = NAME_MAX_BYTES
    max_rooms: int = 100
    max_pending: int = 64
    rate: int = 100
    burst: int = 200
    max_elements: int = MAX_ELEMENTS

    def to_wire(self) -> dict[str, int]:
        return attrs.asdict(self)


@attrs.frozen(slots=True)
class Welcome:
    """``[0, sid, resume_token, options]``"""

    sid: str
    resume_token: str
    options: WelcomeOptions = WelcomeOptions()

    def to_wire(self) -> list[Any]:
        return [_WELCOME, self.sid, self.resume_token, self.options.to_wire()]


@attrs.frozen(slots=True)
class Emit:
    """``[1, event, data]`` or ``[1, event, data, ack_id]``"""

    event: str
    data: Any = None
    ack_id: int | None = None

    def to_wire(self) -> list[Any]:
        wire = [_EMIT, self.event, self.data]
        if self.ack_id is not None:
            wire.append(self.ack_id)
        return wire


@attrs.frozen(slots=True)
class Event:
    """``[2, event, data]`` or ``[2, event, data, ack_id]``"""

    event: str
    data: Any = None
    ack_id: int | None = None

    def to_wire(self) -> list[Any]:
        wire = [_EVENT, self.event, self.data]
        if self.ack_id is not None:
            wire.append(self.ack_id)
        return wire


@attrs.frozen(slots=True)
class Position:
    """A place in a room's history: its epoch and the sequence number of a message."""

    epoch: str
    seq: int

    def to_wire(self) -> list[Any]:
        return [self.epoch, self.seq]


@attrs.frozen(slots=True)
class RoomEvent:
    """``[3, room, event, data, epoch, seq]``"""

    room: str
    event: str
    data: Any
    epoch: str
    seq: int

    @property
    def position(self) -> Position:
        return Position(self.epoch, self.seq)

    def to_wire(self) -> list[Any]:
        return [_ROOM_EVENT, self.room, self.event, self.data, self.epoch, self.seq]


@attrs.frozen(slots=True)
class Join:
    """``[4, room]`` or ``[4, room, ack_id]``"""

    room: str
    ack_id: int | None = None

    def to_wire(self) -> list[Any]:
        wire: list[Any] = [_JOIN, self.room]
        if self.ack_id is not None:
            wire.append(self.ack_id)
        return wire


@attrs.frozen(slots=True)
class Leave:
    """``[5, room]`` or ``[5, room, ack_id]``"""

    room: str
    ack_id: int | None = None

    def to_wire(self) -> list[Any]:
        wire: list[Any] = [_LEAVE, self.room]
        if self.ack_id is not None:
            wire.append(self.ack_id)
        return wire


@attrs.frozen(slots=True)
class Publish:
    """``[6, room, event, data]``, ``[6, room, event, data, ack_id]`` or
    ``[6, room, event, data, ack_id, publish_id]``: a publish id makes a publish
    that is sent again (after a resume) apply once (PROTOCOL.md section 6.6)."""

    room: str
    event: str
    data: Any = None
    ack_id: int | None = None
    publish_id: int | None = attrs.field(default=None)

    @publish_id.validator
    def _needs_ack_id(self, _: attrs.Attribute[int | None], value: int | None) -> None:
        # On the wire the publish id follows the ack id, and its answer is the point.
        if value is not None and self.ack_id is None:
            raise ValueError("a publish id goes with an ack id")

    def to_wire(self) -> list[Any]:
        wire = [_PUBLISH, self.room, self.event, self.data]
        if self.ack_id is not None:
            wire.append(self.ack_id)
            if self.publish_id is not None:
                wire.append(self.publish_id)
        return wire


@attrs.frozen(slots=True)
class Ack:
    """``[7, ack_id, data]``"""

    ack_id: int
    data: Any = None

    def to_wire(self) -> list[Any]:
        return [_ACK, self.ack_id, self.data]


@attrs.frozen(slots=True)
class ErrorReply:
    """``[8, ack_id or null, code, message]``"""

    ack_id: int | None
    code: str
    message: str = ""

    def to_wire(self) -> list[Any]:
        # str(): the code may be an ErrorCode member, and the data rules accept only
        # exact str (as with PacketType above, encoders need not know about enums).
        return [_ERROR, self.ack_id, str(self.code), self.message]


@attrs.frozen(slots=True)
class Gap:
    """``[9, room or null, count]``: ``count`` messages were dropped for this
    connection (in ``room``, or addressed to it directly when ``room`` is null)."""

    room: str | None
    count: int

    def to_wire(self) -> list[Any]:
        return [_GAP, self.room, self.count]


@attrs.frozen(slots=True)
class Resume:
    """``[10, sid, resume_token, {room: [epoch, seq], ...}]`` with an optional ack id."""

    sid: str
    resume_token: str
    positions: Mapping[str, Position] = attrs.field(factory=dict)
    ack_id: int | None = None

    def to_wire(self) -> list[Any]:
        wire: list[Any] = [
            _RESUME, self.sid, self.resume_token,
            {room: pos.to_wire() for room, pos in self.positions.items()},
        ]
        if self.ack_id is not None:
            wire.append(self.ack_id)
        return wire


Packet: TypeAlias = (
    Welcome | Emit | Event | RoomEvent | Join | Leave | Publish | Ack | ErrorReply | Gap
    | Resume
)


# --- data rules -----------------------------------------------------------------------


class DataError(ValueError):
    """Event data breaks the data rules (the caller picks the wire code)."""


def check_data(
    value: Any, *, allow_bytes: bool = True, check_strings: bool = False, depth: int = MAX_DEPTH,
    max_elements: int | None = None,
) -> int:
    """Check a data value against the protocol's data rules.

    Data is null, a boolean, an integer in [-2**63, 2**64-1], a finite float, a
    string, binary (``allow_bytes``: msgpack only), an array, or a map with string
    keys, nested at most ``depth`` (:data:`MAX_DEPTH`) deep. With ``check_strings`` every string
    is also checked for lone surrogates, which JSON's ``\\u`` escapes can produce
    but UTF-8 cannot carry. Subclasses of ``str`` and ``int`` (such as the members
    of :class:`~eventbus.ErrorCode`) count as their base type.

    Returns:
        How many values ``value`` holds, itself included (a map's keys not counted).

    Raises:
        DataError: naming the first rule broken, or the data holds more than
            ``max_elements`` values (checking stops there).
    """
    limit = _NO_LIMIT if max_elements is None else max_elements
    count = _check(value, depth, allow_bytes, check_strings, limit)
    if count > limit:
        raise DataError(f"more than {limit} values")
    return count


_NO_LIMIT = 2**62


def _check(value: Any, room: int, allow_bytes: bool, check_strings: bool, limit: int) -> int:
    """The number of values in ``value``; stops counting (not checking) once a
    container's count passes ``limit``, which the caller then reports."""
    kind = type(value)
    if kind is str:
        if check_strings and _LONE_SURROGATE.search(value):
            raise DataError("strings must not contain lone surrogates")
    elif kind is int:
        if not INT_MIN <= value <= INT_MAX:
            raise DataError(f"integer {value} is outside [-2**63, 2**64-1]")
    elif kind is dict:
        if room == 0:
            raise DataError(f"nested deeper than {MAX_DEPTH} levels")
        count = 1
        for key, item in value.items():
            if type(key) is not str:
                raise DataError("map keys must be strings")
            if check_strings and _LONE_SURROGATE.search(key):
                raise DataError("strings must not contain lone surrogates")
            count += _check(item, room - 1, allow_bytes, check_strings, limit - count)
            if count > limit:
                break
        return count
    elif kind is list:
        if room == 0:
            raise DataError(f"nested deeper than {MAX_DEPTH} levels")
        count = 1
        for item in value:
            count += _check(item, room - 1, allow_bytes, check_strings, limit - count)
            if count > limit:
                break
        return count
    elif kind is float:
        if not math.isfinite(value):
            raise DataError("floats must be finite")
    elif value is None or kind is bool:
        pass
    elif kind is bytes:
        if not allow_bytes:
            raise DataError("binary data needs the msgpack codec")
    elif isinstance(value, str):
        # A str subclass (a StrEnum member, say): encoders write it as its string.
        return _check(str(value), room, allow_bytes, check_strings, limit)
    elif isinstance(value, int) and not isinstance(value, bool):
        return _check(int(value), room, allow_bytes, check_strings, limit)
    else:
        raise DataError(f"{kind.__name__} is not a data type")
    return 1


def check_name(name: Any, what: str, max_bytes: int, *, reserved_ok: bool) -> str:
    """Check an event or room name; return it.

    Raises:
        RemoteProtocolError: ``invalid_packet`` if it is not a string,
            ``invalid_name`` if it breaks the name rules.
    """
    if type(name) is not str:
        raise RemoteProtocolError(f"{what} name must be a string", code=ErrorCode.INVALID_PACKET)
    # Four UTF-8 bytes per character at most: short names need no encoding.
    size = len(name) if name.isascii() else len(name.encode("utf-8", "surrogatepass"))
    if not 0 < size <= max_bytes:
        raise RemoteProtocolError(
            f"{what} name must be 1 to {max_bytes} UTF-8 bytes, not {size}",
            code=ErrorCode.INVALID_NAME,
        )
    if _BAD_NAME_CHARS.search(name):
        raise RemoteProtocolError(
            f"{what} name must not contain control characters or lone surrogates",
            code=ErrorCode.INVALID_NAME,
        )
    if not reserved_ok and name[0] == "$":
        raise RemoteProtocolError(
            f"{what} names starting with '$' are reserved", code=ErrorCode.INVALID_NAME
        )
    return name


# --- parsing ----------------------------------------------------------------------------


class _Rules:
    """What a parser needs to know beyond the array itself."""

    __slots__ = (
        "allow_bytes", "check_strings", "elements", "max_elements", "max_name", "reserved_ok")

    def __init__(
        self, max_name: int, reserved_ok: bool, allow_bytes: bool, check_strings: bool,
        max_elements: int,
    ) -> None:
        self.max_name = max_name
        self.reserved_ok = reserved_ok
        self.allow_bytes = allow_bytes
        self.check_strings = check_strings
        self.max_elements = max_elements
        #: Values counted in the packet being parsed (every data field together).
        self.elements = 0


def _invalid(message: str) -> RemoteProtocolError:
    return RemoteProtocolError(message, code=ErrorCode.INVALID_PACKET)


def _arity(wire: list[Any], name: str, *counts: int) -> None:
    if len(wire) not in counts:
        expected = " or ".join(str(c) for c in counts)
        raise _invalid(f"{name} packet must have {expected} elements, not {len(wire)}")


def _ack_id(value: Any) -> int:
    if type(value) is not int or not 0 < value <= ACK_ID_MAX:
        raise _invalid(f"ack id must be an integer from 1 to {ACK_ID_MAX}")
    return value


def _opt_ack(wire: list[Any], index: int) -> int | None:
    return _ack_id(wire[index]) if len(wire) > index else None


def _data(value: Any, rules: _Rules) -> Any:
    limit = rules.max_elements - rules.elements
    try:
        rules.elements += _check(value, MAX_DEPTH, rules.allow_bytes, rules.check_strings, limit)
    except DataError as exc:
        raise _invalid(f"data: {exc}") from None
    if rules.elements > rules.max_elements:
        raise _invalid(f"data holds more than {rules.max_elements} values (max_elements)")
    return value


def _token(value: Any, what: str) -> str:
    if type(value) is not str or not _TOKEN.fullmatch(value):
        raise _invalid(f"{what} must be 1 to 64 characters of A-Z a-z 0-9 _ -")
    return value


def _count(value: Any, what: str, lowest: int) -> int:
    if type(value) is not int or not lowest <= value <= SEQ_MAX:
        raise _invalid(f"{what} must be an integer from {lowest} to 2**53-1")
    return value


def _epoch(value: Any) -> str:
    if type(value) is not str or not _EPOCH.fullmatch(value):
        raise _invalid("epoch must be 1 to 64 printable ASCII characters")
    return value


def _name(value: Any, what: str, rules: _Rules) -> str:
    return check_name(value, what, rules.max_name, reserved_ok=rules.reserved_ok)


def _parse_welcome(wire: list[Any], rules: _Rules) -> Welcome:
    _arity(wire, "welcome", 4)
    options = wire[3]
    if type(options) is not dict:
        raise _invalid("welcome options must be a map")
    values: dict[str, int] = {}
    for field in attrs.fields(WelcomeOptions):
        value = options.get(field.name)
        if value is None and field.name in _LATER_OPTIONS:
            continue  # a server from before the option existed: its default applies
        # Bounded like integers in data, so that a decoded welcome can be re-encoded.
        if type(value) is not int or not 0 <= value <= INT_MAX:
            raise _invalid(f"welcome option {field.name!r} must be an integer from 0 to 2**64-1")
        values[field.name] = value
    # Keys a newer server adds are ignored on purpose: that is how v1 grows.
    return Welcome(_token(wire[1], "sid"), _token(wire[2], "resume token"),
                   WelcomeOptions(**values))


#: Welcome options added after v1 first shipped, which older servers do not send.
_LATER_OPTIONS = frozenset({"max_elements"})


def _parse_emit(wire: list[Any], rules: _Rules) -> Emit:
    _arity(wire, "emit", 3, 4)
    return Emit(_name(wire[1], "event", rules), _data(wire[2], rules), _opt_ack(wire, 3))


def _parse_event(wire: list[Any], rules: _Rules) -> Event:
    _arity(wire, "event", 3, 4)
    return Event(_name(wire[1], "event", rules), _data(wire[2], rules), _opt_ack(wire, 3))


def _parse_room_event(wire: list[Any], rules: _Rules) -> RoomEvent:
    _arity(wire, "room event", 6)
    return RoomEvent(
        _name(wire[1], "room", rules), _name(wire[2], "event", rules),
        _data(wire[3], rules), _epoch(wire[4]), _count(wire[5], "seq", 1),
    )


def _parse_join(wire: list[Any], rules: _Rules) -> Join:
    _arity(wire, "join", 2, 3)
    return Join(_name(wire[1], "room", rules), _opt_ack(wire, 2))


def _parse_leave(wire: list[Any], rules: _Rules) -> Leave:
    _arity(wire, "leave", 2, 3)
    return Leave(_name(wire[1], "room", rules), _opt_ack(wire, 2))


def _parse_publish(wire: list[Any], rules: _Rules) -> Publish:
    _arity(wire, "publish", 4, 5, 6)
    return Publish(
        _name(wire[1], "room", rules), _name(wire[2], "event", rules),
        _data(wire[3], rules), _opt_ack(wire, 4),
        _count(wire[5], "publish id", 1) if len(wire) > 5 else None,
    )


def _parse_ack(wire: list[Any], rules: _Rules) -> Ack:
    _arity(wire, "ack", 3)
    return Ack(_ack_id(wire[1]), _data(wire[2], rules))


def _parse_error(wire: list[Any], rules: _Rules) -> ErrorReply:
    _arity(wire, "error", 4)
    ack_id = None if wire[1] is None else _ack_id(wire[1])
    code, message = wire[2], wire[3]
    if type(code) is not str or not _CODE.fullmatch(code):
        raise _invalid("error code must be 1 to 64 characters of a-z 0-9 _")
    if type(message) is not str:
        raise _invalid("error message must be a string")
    _data(message, rules)
    return ErrorReply(ack_id, code, message)


def _parse_gap(wire: list[Any], rules: _Rules) -> Gap:
    _arity(wire, "gap", 3)
    room = None if wire[1] is None else _name(wire[1], "room", rules)
    return Gap(room, _count(wire[2], "count", 1))


def _parse_resume(wire: list[Any], rules: _Rules) -> Resume:
    _arity(wire, "resume", 4, 5)
    raw = wire[3]
    if type(raw) is not dict:
        raise _invalid("resume positions must be a map")
    positions: dict[str, Position] = {}
    for room, pos in raw.items():
        _name(room, "room", rules)
        if type(pos) is not list or len(pos) != 2:
            raise _invalid("a resume position must be [epoch, seq]")
        positions[room] = Position(_epoch(pos[0]), _count(pos[1], "seq", 0))
    return Resume(_token(wire[1], "sid"), _token(wire[2], "resume token"), positions,
                  _opt_ack(wire, 4))


_Parser = Callable[[list[Any], _Rules], Packet]

#: Packets each role may receive, by type.
_PARSERS: dict[Role, dict[int, _Parser]] = {
    Role.SERVER: {
        PacketType.EMIT: _parse_emit,
        PacketType.JOIN: _parse_join,
        PacketType.LEAVE: _parse_leave,
        PacketType.PUBLISH: _parse_publish,
        PacketType.ACK: _parse_ack,
        PacketType.ERROR: _parse_error,
        PacketType.RESUME: _parse_resume,
    },
    Role.CLIENT: {
        PacketType.WELCOME: _parse_welcome,
        PacketType.EVENT: _parse_event,
        PacketType.ROOM_EVENT: _parse_room_event,
        PacketType.ACK: _parse_ack,
        PacketType.ERROR: _parse_error,
        PacketType.GAP: _parse_gap,
    },
}


class PacketParser:
    """Turns decoded frames into packets for one receiving role.

    Args:
        receiver: The role that receives the packets (the server parses what
            clients send, and the other way round).
        max_name: The longest event or room name accepted, in UTF-8 bytes.
        allow_bytes: Whether binary data may appear (msgpack: yes, JSON: no).
        max_elements: The most data values one packet may hold (``invalid_packet``
            beyond).
    """

    __slots__ = ("_checked", "_parsers", "_plain", "elements", "receiver")

    def __init__(
        self, receiver: Role, *, max_name: int = NAME_MAX_BYTES, allow_bytes: bool = True,
        max_elements: int = MAX_ELEMENTS,
    ) -> None:
        self.receiver = receiver
        self._parsers = _PARSERS[receiver]
        # Clients may not use reserved names; the server may (for its own events).
        reserved_ok = receiver is Role.CLIENT
        self._plain = _Rules(max_name, reserved_ok, allow_bytes, False, max_elements)
        self._checked = _Rules(max_name, reserved_ok, allow_bytes, True, max_elements)
        #: How many data values the last packet parsed held (its cost to check).
        self.elements = 0

    def parse(self, wire: Any, *, check_strings: bool = False) -> Packet:
        """Turn one decoded frame into a packet.

        Args:
            wire: The decoded frame.
            check_strings: Also reject lone surrogates in strings (needed when the
                frame was JSON with ``\\u`` escapes).

        Raises:
            RemoteProtocolError: with code ``unknown_type``, ``invalid_packet`` or
                ``invalid_name``.
        """
        if type(wire) is not list or not wire:
            raise RemoteProtocolError(
                "a packet must be a non-empty array", code=ErrorCode.UNKNOWN_TYPE
            )
        kind = wire[0]
        parser = self._parsers.get(kind) if type(kind) is int else None
        if parser is None:
            raise RemoteProtocolError(
                f"packet type {kind!r} is not one a {self.receiver.value} receives",
                code=ErrorCode.UNKNOWN_TYPE,
            )
        rules = self._checked if check_strings else self._plain
        rules.elements = 0
        try:
            return parser(wire, rules)
        except RemoteProtocolError as exc:
            exc.ack_id = salvage_ack_id(wire)
            raise
        finally:
            self.elements = rules.elements


#: Where each request type carries its optional ack id.
_ACK_INDEX = {_EMIT: 3, _JOIN: 2, _LEAVE: 2, _PUBLISH: 4, _RESUME: 4}


def salvage_ack_id(wire: list[Any]) -> int | None:
    """The ack id of an invalid request, if one can be read, so that the error
    reply answers the request instead of leaving it to time out."""
    index = _ACK_INDEX.get(wire[0])
    # A PUBLISH may carry a publish id after its ack id.
    lengths = (5, 6) if wire[0] == _PUBLISH else (None if index is None else index + 1,)
    if index is None or len(wire) not in lengths:
        return None
    ack_id = wire[index]
    return ack_id if type(ack_id) is int and 0 < ack_id <= ACK_ID_MAX else None
