"""The messages between nodes: msgpack arrays that start with a version number.

* a room message: ``[1, ROOM, epoch, seq, room, event, data, sender, delivery,
  key, publish_id]``; the publishing node encodes its head (:data:`ROOM_HEAD`) and
  its tail (:func:`room_tail`) once, for every node, and the publish script writes
  the position between them, and keeps the tail in the room's history
  (:func:`decode_tail` reads it back);
* a signal: ``[1, SIGNAL, kind, sender, room, body]``;
* a probe: ``[1, PROBE, token]``, that a node sends to its own channel.

Values past the ones this version reads (a later revision of version 1) are ignored;
any other message this version cannot read raises :exc:`Undecodable`.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import msgpack

from ...protocol import Position
from ..base import Envelope, Signal, SignalKind

__all__ = [
    "PROBE",
    "ROOM",
    "ROOM_HEAD",
    "SIGNAL",
    "WIRE_VERSION",
    "Incoming",
    "Undecodable",
    "decode",
    "decode_tail",
    "encode_probe",
    "encode_signal",
    "room_tail",
]

#: The version of the messages between nodes: the first value of each.
WIRE_VERSION = 1
#: The kinds of message: the second value of each.
ROOM, SIGNAL, PROBE = 1, 2, 3
# msgpack: an array of 11, the version, the kind; the script adds epoch and seq,
# the node the rest: [1, ROOM, epoch, seq, room, event, data, sender, delivery, key,
# publish_id]. (The publish id came last, in a later revision: nodes that read ten
# values ignore it.)
ROOM_HEAD = b"\x9b" + msgpack.packb(WIRE_VERSION) + msgpack.packb(ROOM)

_SIGNAL_KINDS = frozenset(int(kind) for kind in SignalKind)

#: What a node receives from the others: a room message and its position, or a signal.
Incoming: TypeAlias = tuple[Envelope, Position] | Signal


class Undecodable(ValueError):
    """Not a message this version understands."""


def room_tail(envelope: Envelope) -> bytes:
    """A room message after its position."""
    return b"".join(msgpack.packb(value) for value in (
        envelope.room, envelope.event, envelope.data, envelope.sender, envelope.delivery,
        envelope.key, envelope.publish_id))


def _envelope(values: list[Any]) -> Envelope | None:
    """The envelope of a room message's values after its position, if they are one."""
    if len(values) < 6:
        return None
    room, event, data, sender, delivery, key = values[:6]
    publish_id = values[6] if len(values) > 6 else None
    if (isinstance(room, str) and isinstance(event, str) and isinstance(sender, str | None)
            and isinstance(delivery, str) and isinstance(key, str | None)
            and (publish_id is None or type(publish_id) is int)):
        return Envelope(room, event, data, sender, delivery, key, publish_id)
    return None


def decode_tail(tail: bytes) -> Envelope:
    """A room message's tail, as the history keeps it (values past the ones this
    version reads are ignored, as in :func:`decode`).

    Raises:
        Undecodable: not a tail this version understands.
    """
    unpacker = msgpack.Unpacker(raw=False, use_list=True, strict_map_key=False)
    unpacker.feed(tail)
    try:
        values = list(unpacker)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise Undecodable(f"not msgpack ({exc})") from None
    envelope = _envelope(values)
    if envelope is None:
        raise Undecodable(f"a room message's tail with {len(values)} values")
    return envelope


def encode_signal(signal: Signal) -> bytes:
    data: bytes = msgpack.packb([WIRE_VERSION, SIGNAL, int(signal.kind), signal.sender,
                                 signal.room, list(signal.body)])
    return data


def encode_probe(token: str) -> bytes:
    data: bytes = msgpack.packb([WIRE_VERSION, PROBE, token])
    return data


def decode(raw: bytes) -> Incoming | str:
    """A message from Redis: a room message, a signal, or a probe's token.

    Raises:
        Undecodable: not a message this version understands.
    """
    try:
        wire = msgpack.unpackb(raw, raw=False, use_list=True, strict_map_key=False)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise Undecodable(f"not msgpack ({exc})") from None
    if not isinstance(wire, list) or len(wire) < 2:
        raise Undecodable("not a [version, kind, ...] array")
    if wire[0] != WIRE_VERSION:
        raise Undecodable(f"version {wire[0]!r}; this node reads version {WIRE_VERSION}")
    # Values past the ones read here (a later revision of version 1) are ignored.
    kind = wire[1]
    if kind == ROOM and len(wire) >= 10:
        epoch, seq = wire[2:4]
        envelope = _envelope(wire[4:])
        if isinstance(epoch, str) and type(seq) is int and envelope is not None:
            return envelope, Position(epoch, seq)
    elif kind == SIGNAL and len(wire) >= 6:
        signal_kind, sender, room, body = wire[2:6]
        if (signal_kind in _SIGNAL_KINDS and isinstance(sender, str)
                and isinstance(room, str | None) and isinstance(body, list)):
            return Signal(SignalKind(signal_kind), sender, body, room)
    elif kind == PROBE and len(wire) >= 3 and isinstance(wire[2], str):
        return str(wire[2])
    raise Undecodable(f"kind {kind!r} with {len(wire)} values")
