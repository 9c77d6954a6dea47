"""Helpers for the language-neutral vectors in protocol/vectors/.

A *logical packet* is the JSON object the vector files use (see
protocol/vectors/README.md); these functions convert it to and from packet objects,
and compare values strictly (``True`` is not ``1``, ``1`` is not ``1.0``).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import attrs

from eventbus.protocol import (
    Ack,
    Codec,
    Emit,
    ErrorReply,
    Event,
    Gap,
    Join,
    JsonCodec,
    Leave,
    MsgpackCodec,
    Packet,
    Position,
    Publish,
    Resume,
    Role,
    RoomEvent,
    Welcome,
    WelcomeOptions,
)

VECTORS_DIR = Path(__file__).resolve().parents[2] / "protocol" / "vectors"

#: Logical type name -> packet class.
PACKET_CLASSES: dict[str, type[Any]] = {
    "welcome": Welcome,
    "emit": Emit,
    "event": Event,
    "room_event": RoomEvent,
    "join": Join,
    "leave": Leave,
    "publish": Publish,
    "ack": Ack,
    "error": ErrorReply,
    "gap": Gap,
    "resume": Resume,
}
TYPE_NAMES = {cls: name for name, cls in PACKET_CLASSES.items()}
CODECS: dict[str, type[Codec]] = {"json": JsonCodec, "msgpack": MsgpackCodec}


@cache
def load(file_name: str) -> dict[str, Any]:
    with (VECTORS_DIR / file_name).open(encoding="utf-8") as file:
        document: dict[str, Any] = json.load(file)
    return document


def valid_vectors() -> list[dict[str, Any]]:
    vectors: list[dict[str, Any]] = load("valid.json")["vectors"]
    return vectors


def invalid_vectors() -> list[dict[str, Any]]:
    vectors: list[dict[str, Any]] = load("invalid.json")["vectors"]
    return vectors


def receiver_of(sender: str) -> Role:
    """The role that receives what ``sender`` sends."""
    return Role.SERVER if Role(sender) is Role.CLIENT else Role.CLIENT


# --- values -----------------------------------------------------------------------------


def value_from_logical(value: Any) -> Any:
    """Turn {"$binary": hex} into bytes, recursively."""
    if isinstance(value, dict):
        if list(value) == ["$binary"]:
            return bytes.fromhex(value["$binary"])
        return {key: value_from_logical(item) for key, item in value.items()}
    if isinstance(value, list):
        return [value_from_logical(item) for item in value]
    return value


def value_to_logical(value: Any) -> Any:
    """Turn bytes into {"$binary": hex}, recursively."""
    if isinstance(value, bytes):
        return {"$binary": value.hex()}
    if isinstance(value, dict):
        return {key: value_to_logical(item) for key, item in value.items()}
    if isinstance(value, list):
        return [value_to_logical(item) for item in value]
    return value


def strict(value: Any) -> Any:
    """A comparable form of a value that keeps types apart: with it, ``True``,
    ``1`` and ``1.0`` differ, and str subclasses (enums) compare as plain str."""
    if isinstance(value, dict):
        return ("map", sorted((strict(key), strict(item)) for key, item in value.items()))
    if isinstance(value, list):
        return ("array", [strict(item) for item in value])
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int):
        return ("int", int(value))
    if isinstance(value, float):
        return ("float", value)
    if isinstance(value, str):
        return ("str", str(value))
    if isinstance(value, bytes):
        return ("bin", value)
    if value is None:
        return ("nil", None)
    raise TypeError(f"not a data value: {value!r}")


# --- packets ----------------------------------------------------------------------------

_FIELDS: dict[str, tuple[set[str], set[str]]] = {
    # type: (required fields, optional fields) besides "type"
    "welcome": ({"sid", "resume_token", "options"}, set()),
    "emit": ({"event", "data"}, {"ack_id"}),
    "event": ({"event", "data"}, {"ack_id"}),
    "room_event": ({"room", "event", "data", "epoch", "seq"}, set()),
    "join": ({"room"}, {"ack_id"}),
    "leave": ({"room"}, {"ack_id"}),
    "publish": ({"room", "event", "data"}, {"ack_id", "publish_id"}),
    "ack": ({"ack_id", "data"}, set()),
    "error": ({"code", "message"}, {"ack_id"}),
    "gap": ({"room", "count"}, set()),
    "resume": ({"sid", "resume_token", "positions"}, {"ack_id"}),
}


def packet_from_logical(logical: dict[str, Any]) -> Packet:
    """Build the packet a logical packet describes; unknown or missing fields raise."""
    kind = logical["type"]
    required, optional = _FIELDS[kind]
    fields = set(logical) - {"type"}
    if not required <= fields <= required | optional:
        raise ValueError(f"{kind} packet has fields {sorted(fields)}")
    values = {name: logical[name] for name in fields}
    if "data" in values:
        values["data"] = value_from_logical(values["data"])
    if kind == "welcome":
        values["options"] = WelcomeOptions(**values["options"])
    elif kind == "resume":
        values["positions"] = {
            room: Position(pos["epoch"], pos["seq"]) for room, pos in values["positions"].items()
        }
    elif kind == "error":
        values.setdefault("ack_id", None)
    packet: Packet = PACKET_CLASSES[kind](**values)
    return packet


def packet_to_logical(packet: Packet) -> dict[str, Any]:
    """The logical form of a packet (ack_id omitted when it is None)."""
    logical: dict[str, Any] = {"type": TYPE_NAMES[type(packet)]}
    for field in attrs.fields(type(packet)):
        value = getattr(packet, field.name)
        if field.name in ("ack_id", "publish_id") and value is None:
            continue
        if field.name == "data":
            value = value_to_logical(value)
        elif field.name == "options":
            value = attrs.asdict(value)
        elif field.name == "positions":
            value = {room: {"epoch": p.epoch, "seq": p.seq} for room, p in value.items()}
        logical[field.name] = value
    return logical


def strict_packet(packet: Packet) -> Any:
    """A type-strict comparable form of a packet."""
    return (type(packet).__name__, strict(attrs.asdict(packet)))
