#!/usr/bin/env python3
"""Generate the protocol v1 test vectors: valid.json and invalid.json.

Usage (from anywhere)::

    python protocol/vectors/generate.py           rewrite the files next to this script
    python protocol/vectors/generate.py --check   exit 1 if the files are out of date

This script deliberately does not import eventbus. Every wire array below is
written by hand next to its logical packet, and serialized with the standard
library's ``json`` and the ``msgpack`` package (``use_bin_type=True``), so the
vectors check the codec instead of echoing it. The output is deterministic.
See README.md in this directory for the file formats.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import msgpack

HERE = Path(__file__).resolve().parent
VERSION = 1

# Packet types (the first element of every packet array).
WELCOME, EMIT, EVENT, ROOM_EVENT, JOIN, LEAVE, PUBLISH, ACK, ERROR, GAP, RESUME = range(11)

DEFAULT_OPTIONS = {
    "ping_interval": 25000,
    "ping_timeout": 20000,
    "max_frame": 1048576,
    "max_name": 128,
    "max_rooms": 100,
    "max_pending": 64,
    "rate": 100,
    "burst": 200,
    "max_elements": 10000,
}


def nested(depth: int) -> Any:
    """``depth`` arrays inside each other, the innermost one empty."""
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


# --- valid vectors ----------------------------------------------------------------------

_valid: list[dict[str, Any]] = []


def logical_value(value: Any) -> Any:
    """A data value as the vector files write it: bytes become {"$binary": hex}."""
    if isinstance(value, bytes):
        return {"$binary": value.hex()}
    if isinstance(value, list):
        return [logical_value(item) for item in value]
    if isinstance(value, dict):
        return {key: logical_value(item) for key, item in value.items()}
    return value


def has_bytes(value: Any) -> bool:
    if isinstance(value, bytes):
        return True
    if isinstance(value, list):
        return any(has_bytes(item) for item in value)
    if isinstance(value, dict):
        return any(has_bytes(item) for item in value.values())
    return False


def valid(name: str, sender: str, packet: dict[str, Any], wire: list[Any]) -> None:
    """Add a valid vector: the logical packet and its wire array, built by hand."""
    vector: dict[str, Any] = {
        "name": name,
        "sender": sender,
        "packet": logical_value(packet),
    }
    if has_bytes(wire):
        vector["json"] = None
        vector["json_error"] = "unencodable"
    else:
        vector["json"] = json.dumps(
            wire, ensure_ascii=False, separators=(",", ":"), allow_nan=False
        )
    vector["msgpack"] = msgpack.packb(wire, use_bin_type=True).hex()
    _valid.append(vector)


C, S = "client", "server"

# Client to server: EMIT.
valid("emit_null_data", C, {"type": "emit", "event": "ping", "data": None},
      [EMIT, "ping", None])
valid("emit_with_ack", C,
      {"type": "emit", "event": "chat", "data": {"text": "hello"}, "ack_id": 1},
      [EMIT, "chat", {"text": "hello"}, 1])
valid("emit_ack_id_max", C, {"type": "emit", "event": "chat", "data": 0, "ack_id": 2**31 - 1},
      [EMIT, "chat", 0, 2**31 - 1])
valid("emit_empty_object", C, {"type": "emit", "event": "e", "data": {}}, [EMIT, "e", {}])
valid("emit_empty_array", C, {"type": "emit", "event": "e", "data": [], "ack_id": 2},
      [EMIT, "e", [], 2])
valid("emit_empty_string", C, {"type": "emit", "event": "e", "data": ""}, [EMIT, "e", ""])
valid("emit_nested_data", C,
      {"type": "emit", "event": "order.created",
       "data": {"id": 17, "items": [{"sku": "A-1", "qty": 2}, {"sku": "B-2", "qty": 1}],
                "meta": {"tags": ["new", "paid"], "note": None, "gift": False}},
       "ack_id": 300},
      [EMIT, "order.created",
       {"id": 17, "items": [{"sku": "A-1", "qty": 2}, {"sku": "B-2", "qty": 1}],
        "meta": {"tags": ["new", "paid"], "note": None, "gift": False}},
       300])
valid("emit_unicode_event", C,
      {"type": "emit", "event": "café", "data": "naïve crème brûlée"},
      [EMIT, "café", "naïve crème brûlée"])
valid("emit_emoji_event", C,
      {"type": "emit", "event": "🎉", "data": {"😀": "grin", "房间": "room"}, "ack_id": 9},
      [EMIT, "🎉", {"😀": "grin", "房间": "room"}, 9])
valid("emit_int64_max", C, {"type": "emit", "event": "n", "data": 2**63 - 1},
      [EMIT, "n", 2**63 - 1])
valid("emit_int64_min", C, {"type": "emit", "event": "n", "data": -(2**63)},
      [EMIT, "n", -(2**63)])
valid("emit_uint64_max", C, {"type": "emit", "event": "n", "data": 2**64 - 1},
      [EMIT, "n", 2**64 - 1])
_INT_EDGES = [0, 1, -1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, -32, -33, -128,
              -129, -32768, -32769, -(2**31), -(2**31) - 1]
valid("emit_integer_widths", C, {"type": "emit", "event": "ints", "data": _INT_EDGES},
      [EMIT, "ints", _INT_EDGES])
_FLOATS = [1.5, -0.25, 3.141592653589793, 0.1, 100.125, -2.75]
valid("emit_floats", C, {"type": "emit", "event": "floats", "data": _FLOATS},
      [EMIT, "floats", _FLOATS])
valid("emit_booleans_and_null", C,
      {"type": "emit", "event": "flags", "data": [True, False, None]},
      [EMIT, "flags", [True, False, None]])
valid("emit_string_escapes", C,
      {"type": "emit", "event": "text", "data": 'quote " backslash \\ slash / newline \n tab \t'},
      [EMIT, "text", 'quote " backslash \\ slash / newline \n tab \t'])
valid("emit_control_char_in_data", C,
      {"type": "emit", "event": "text", "data": "bell\u0007 nul\u0000 del\u007f"},
      [EMIT, "text", "bell\u0007 nul\u0000 del\u007f"])
valid("emit_string_lengths", C,
      {"type": "emit", "event": "s", "data": ["x" * 31, "y" * 32, "z" * 256]},
      [EMIT, "s", ["x" * 31, "y" * 32, "z" * 256]])
valid("emit_name_128_ascii_bytes", C, {"type": "emit", "event": "e" * 128, "data": None},
      [EMIT, "e" * 128, None])
valid("emit_name_128_utf8_bytes", C,
      {"type": "emit", "event": "房" * 42 + "ab", "data": None, "ack_id": 3},
      [EMIT, "房" * 42 + "ab", None, 3])
valid("emit_depth_32", C, {"type": "emit", "event": "deep", "data": nested(32)},
      [EMIT, "deep", nested(32)])
valid("emit_binary", C,
      {"type": "emit", "event": "upload", "data": bytes.fromhex("00ff10805a"), "ack_id": 4},
      [EMIT, "upload", bytes.fromhex("00ff10805a"), 4])
valid("emit_binary_nested", C,
      {"type": "emit", "event": "file",
       "data": {"name": "a.bin", "chunks": [b"\x01\x02", b"", b"\xfe" * 40]}},
      [EMIT, "file", {"name": "a.bin", "chunks": [b"\x01\x02", b"", b"\xfe" * 40]}])
valid("emit_binary_empty", C, {"type": "emit", "event": "blob", "data": b""},
      [EMIT, "blob", b""])

# Client to server: JOIN, LEAVE, PUBLISH.
valid("join", C, {"type": "join", "room": "lobby"}, [JOIN, "lobby"])
valid("join_with_ack", C, {"type": "join", "room": "房间", "ack_id": 7}, [JOIN, "房间", 7])
valid("leave", C, {"type": "leave", "room": "lobby"}, [LEAVE, "lobby"])
valid("leave_with_ack", C, {"type": "leave", "room": "café", "ack_id": 8},
      [LEAVE, "café", 8])
valid("publish", C,
      {"type": "publish", "room": "lobby", "event": "chat", "data": {"text": "hi all"}},
      [PUBLISH, "lobby", "chat", {"text": "hi all"}])
valid("publish_with_ack", C,
      {"type": "publish", "room": "房间", "event": "🎉", "data": [1, 2.5, "three"], "ack_id": 11},
      [PUBLISH, "房间", "🎉", [1, 2.5, "three"], 11])
valid("publish_null_data", C,
      {"type": "publish", "room": "r", "event": "tick", "data": None},
      [PUBLISH, "r", "tick", None])
valid("publish_binary", C,
      {"type": "publish", "room": "media", "event": "frame", "data": {"png": b"\x89PNG"},
       "ack_id": 12},
      [PUBLISH, "media", "frame", {"png": b"\x89PNG"}, 12])
valid("publish_with_publish_id", C,
      {"type": "publish", "room": "lobby", "event": "chat", "data": "hi", "ack_id": 13,
       "publish_id": 2**53 - 1},
      [PUBLISH, "lobby", "chat", "hi", 13, 2**53 - 1])

# Client to server: ACK, ERROR, RESUME.
valid("ack_from_client", C, {"type": "ack", "ack_id": 5, "data": {"ok": True}},
      [ACK, 5, {"ok": True}])
valid("ack_from_client_null_data", C, {"type": "ack", "ack_id": 2**31 - 1, "data": None},
      [ACK, 2**31 - 1, None])
valid("ack_from_client_binary", C, {"type": "ack", "ack_id": 6, "data": b"\x00"},
      [ACK, 6, b"\x00"])
valid("error_from_client", C,
      {"type": "error", "ack_id": 21, "code": "unknown_event", "message": "no handler"},
      [ERROR, 21, "unknown_event", "no handler"])
valid("error_from_client_without_ack", C,
      {"type": "error", "code": "malformed", "message": ""},
      [ERROR, None, "malformed", ""])
valid("resume_no_positions", C,
      {"type": "resume", "sid": "s-1", "resume_token": "tok_ABC", "positions": {}},
      [RESUME, "s-1", "tok_ABC", {}])
valid("resume_with_positions", C,
      {"type": "resume", "sid": "abc", "resume_token": "Z" * 64,
       "positions": {"lobby": {"epoch": "e1", "seq": 0},
                     "房间": {"epoch": "2024-05-01T00:00:00Z", "seq": 2**53 - 1}},
       "ack_id": 13},
      [RESUME, "abc", "Z" * 64,
       {"lobby": ["e1", 0], "房间": ["2024-05-01T00:00:00Z", 2**53 - 1]}, 13])

# Server to client: WELCOME.
valid("welcome_default_options", S,
      {"type": "welcome", "sid": "c0ffee", "resume_token": "r3sum3-T0ken_x",
       "options": dict(DEFAULT_OPTIONS)},
      [WELCOME, "c0ffee", "r3sum3-T0ken_x", dict(DEFAULT_OPTIONS)])
_CUSTOM = {
    "ping_interval": 0, "ping_timeout": 0, "max_frame": 65536, "max_name": 16,
    "max_rooms": 1, "max_pending": 1, "rate": 0, "burst": 0, "max_elements": 1,
}
valid("welcome_custom_options", S,
      {"type": "welcome", "sid": "a" * 64, "resume_token": "b",
       "options": dict(_CUSTOM)},
      [WELCOME, "a" * 64, "b", dict(_CUSTOM)])

# Server to client: EVENT, ROOM_EVENT.
valid("event", S, {"type": "event", "event": "notice", "data": "maintenance at 10"},
      [EVENT, "notice", "maintenance at 10"])
valid("event_with_ack", S,
      {"type": "event", "event": "confirm", "data": {"question": "ok?"}, "ack_id": 1},
      [EVENT, "confirm", {"question": "ok?"}, 1])
valid("event_reserved_name", S, {"type": "event", "event": "$presence", "data": []},
      [EVENT, "$presence", []])
valid("event_binary", S, {"type": "event", "event": "blob", "data": b"\xde\xad\xbe\xef"},
      [EVENT, "blob", b"\xde\xad\xbe\xef"])
valid("room_event", S,
      {"type": "room_event", "room": "lobby", "event": "chat",
       "data": {"from": "ann", "text": "hi"}, "epoch": "e1", "seq": 1},
      [ROOM_EVENT, "lobby", "chat", {"from": "ann", "text": "hi"}, "e1", 1])
valid("room_event_unicode", S,
      {"type": "room_event", "room": "房间", "event": "café", "data": "😀",
       "epoch": "2024-05-01T00:00:00Z", "seq": 42},
      [ROOM_EVENT, "房间", "café", "😀", "2024-05-01T00:00:00Z", 42])
valid("room_event_seq_max", S,
      {"type": "room_event", "room": "r", "event": "e", "data": None,
       "epoch": "~!" * 32, "seq": 2**53 - 1},
      [ROOM_EVENT, "r", "e", None, "~!" * 32, 2**53 - 1])
valid("room_event_binary", S,
      {"type": "room_event", "room": "r", "event": "$raw", "data": [b"\x00\x01", 1.5],
       "epoch": "e", "seq": 7},
      [ROOM_EVENT, "r", "$raw", [b"\x00\x01", 1.5], "e", 7])

# Server to client: ACK, ERROR, GAP.
valid("ack_from_server", S, {"type": "ack", "ack_id": 1, "data": "done"}, [ACK, 1, "done"])
# The answer to a RESUME (PROTOCOL.md section 9.4), and the fresh token before it.
_VERDICTS = {
    "lobby": {"recovered": True, "replayed": 3, "position": ["k3Jd9Q_a", 45]},
    "ticker": {"recovered": False, "reason": "epoch_changed", "position": ["Hq2m7Rt0", 12]},
    "secret": {"recovered": False, "reason": "forbidden"},
}
valid("ack_of_resume_with_verdicts", S, {"type": "ack", "ack_id": 1, "data": _VERDICTS},
      [ACK, 1, _VERDICTS])
valid("event_resume_token", S,
      {"type": "event", "event": "$resume_token", "data": "Jm4v0Yk9QeT1bX7sLw2Rz8NcP5hUa3Gd6"},
      [EVENT, "$resume_token", "Jm4v0Yk9QeT1bX7sLw2Rz8NcP5hUa3Gd6"])
valid("ack_from_server_nested", S,
      {"type": "ack", "ack_id": 99, "data": {"members": ["ann", "bob"], "count": 2}},
      [ACK, 99, {"members": ["ann", "bob"], "count": 2}])
valid("error_from_server", S,
      {"type": "error", "ack_id": 3, "code": "forbidden", "message": "not a member of 房间"},
      [ERROR, 3, "forbidden", "not a member of 房间"])
valid("error_from_server_without_ack", S,
      {"type": "error", "code": "rate_limited", "message": "slow down"},
      [ERROR, None, "rate_limited", "slow down"])
valid("error_unknown_code", S,
      {"type": "error", "ack_id": 4, "code": "code_from_the_future_2", "message": ""},
      [ERROR, 4, "code_from_the_future_2", ""])
valid("gap_in_room", S, {"type": "gap", "room": "lobby", "count": 3}, [GAP, "lobby", 3])
valid("gap_direct", S, {"type": "gap", "room": None, "count": 1}, [GAP, None, 1])
valid("gap_count_max", S, {"type": "gap", "room": "🎉", "count": 2**53 - 1},
      [GAP, "🎉", 2**53 - 1])


# --- invalid vectors --------------------------------------------------------------------

_invalid: list[dict[str, Any]] = []


def invalid(
    name: str, receiver: str, codec: str, frame: bytes | str, error: str,
    ack_id: int | None = None, *, ws_close: int | None = None,
) -> None:
    """Add an invalid input: a str is a text frame, bytes a binary frame. A text
    frame given as bytes (invalid UTF-8) needs ``ws_close``."""
    vector: dict[str, Any] = {"name": name, "receiver": receiver, "codec": codec}
    if isinstance(frame, str):
        vector["frame"] = "text"
        vector["text"] = frame
    else:
        vector["frame"] = "text" if ws_close is not None else "binary"
        vector["hex"] = frame.hex()
    vector["error"] = error
    vector["ack_id"] = ack_id
    if ws_close is not None:
        vector["ws_close"] = ws_close
    _invalid.append(vector)


def pack(wire: Any) -> bytes:
    return msgpack.packb(wire, use_bin_type=True)


MALFORMED = "malformed"
WRONG_FRAME_TYPE = "wrong_frame_type"
UNKNOWN_TYPE = "unknown_type"
INVALID_PACKET = "invalid_packet"
INVALID_NAME = "invalid_name"
J, M = "json", "msgpack"

# Wrong shapes.
invalid("root_object", S, J, '{"type":1,"event":"x"}', UNKNOWN_TYPE)
invalid("root_string", S, J, '"emit"', UNKNOWN_TYPE)
invalid("root_number", S, J, "1", UNKNOWN_TYPE)
invalid("root_null", C, J, "null", UNKNOWN_TYPE)
invalid("root_empty_array", S, J, "[]", UNKNOWN_TYPE)
invalid("root_empty_array_msgpack", C, M, pack([]), UNKNOWN_TYPE)
invalid("root_map_msgpack", S, M, pack({"type": 1}), UNKNOWN_TYPE)
invalid("root_binary_msgpack", S, M, pack(b"\x91\x01"), UNKNOWN_TYPE)

# Unknown and wrong-direction packet types.
invalid("unknown_type_11", S, J, '[11,"x",null]', UNKNOWN_TYPE)
invalid("unknown_type_negative", C, M, pack([-1, "x", None]), UNKNOWN_TYPE)
invalid("type_as_string", S, J, '["emit","x",null,1]', UNKNOWN_TYPE)
invalid("type_as_bool", S, J, '[true,"x",null]', UNKNOWN_TYPE)
invalid("type_as_float", S, J, '[1.0,"x",null]', UNKNOWN_TYPE)
invalid("type_as_float_msgpack", S, M, pack([1.0, "x", None]), UNKNOWN_TYPE)
invalid("client_sends_welcome", S, J,
        '[0,"s","t",' + json.dumps(DEFAULT_OPTIONS, separators=(",", ":")) + "]",
        UNKNOWN_TYPE)
invalid("client_sends_event", S, J, '[2,"x",null,1]', UNKNOWN_TYPE)
invalid("client_sends_room_event", S, M, pack([ROOM_EVENT, "r", "e", None, "e1", 1]),
        UNKNOWN_TYPE)
invalid("client_sends_gap", S, J, "[9,null,1]", UNKNOWN_TYPE)
invalid("server_sends_emit", C, J, '[1,"x",null]', UNKNOWN_TYPE)
invalid("server_sends_join", C, M, pack([JOIN, "lobby", 1]), UNKNOWN_TYPE)
invalid("server_sends_resume", C, J, '[10,"s","t",{}]', UNKNOWN_TYPE)

# Wrong arity.
invalid("emit_too_few_fields", S, J, '[1,"x"]', INVALID_PACKET)
invalid("emit_too_many_fields", S, J, '[1,"x",null,1,2]', INVALID_PACKET)
invalid("join_too_many_fields", S, M, pack([JOIN, "r", 1, 2]), INVALID_PACKET)
invalid("ack_without_data", C, J, "[7,1]", INVALID_PACKET)
invalid("error_without_message", C, J, '[8,null,"forbidden"]', INVALID_PACKET)
invalid("room_event_without_seq", C, J, '[3,"r","e",null,"e1"]', INVALID_PACKET)
invalid("gap_too_many_fields", C, J, '[9,"r",1,2]', INVALID_PACKET)

# Wrong field types (the ack id is still salvaged where the request carries one).
invalid("emit_event_is_number", S, J, "[1,42,null,5]", INVALID_PACKET, 5)
invalid("emit_event_is_null", S, J, "[1,null,null]", INVALID_PACKET)
invalid("emit_event_is_binary", S, M, pack([EMIT, b"chat", None, 6]), INVALID_PACKET, 6)
invalid("join_room_is_array", S, J, '[4,["r"],3]', INVALID_PACKET, 3)
invalid("publish_room_is_null", S, J, '[6,null,"e",null,14]', INVALID_PACKET, 14)
invalid("publish_id_zero", S, J, '[6,"r","e",null,14,0]', INVALID_PACKET, 14)
invalid("publish_id_too_large", S, M, pack([PUBLISH, "r", "e", None, 15, 2**53]),
        INVALID_PACKET, 15)
invalid("publish_id_is_string", S, J, '[6,"r","e",null,16,"k1"]', INVALID_PACKET, 16)
invalid("publish_id_without_ack_id", S, J, '[6,"r","e",null,null,3]', INVALID_PACKET)
invalid("publish_too_many_fields", S, J, '[6,"r","e",null,1,2,3]', INVALID_PACKET)
invalid("welcome_options_not_map", C, J, '[0,"s","t",[]]', INVALID_PACKET)
invalid("welcome_option_missing", C, J,
        '[0,"s","t",{"ping_interval":25000,"ping_timeout":20000}]', INVALID_PACKET)
invalid("welcome_option_negative", C, J,
        '[0,"s","t",' + json.dumps({**DEFAULT_OPTIONS, "rate": -1}, separators=(",", ":"))
        + "]", INVALID_PACKET)
invalid("welcome_option_too_large", C, J,
        '[0,"s","t",' + json.dumps({**DEFAULT_OPTIONS, "max_frame": 2**64},
                                   separators=(",", ":")) + "]", INVALID_PACKET)
invalid("welcome_sid_with_space", C, J,
        '[0,"a b","t",' + json.dumps(DEFAULT_OPTIONS, separators=(",", ":")) + "]",
        INVALID_PACKET)
invalid("room_event_epoch_with_space", C, J, '[3,"r","e",null,"e 1",1]', INVALID_PACKET)
invalid("room_event_seq_zero", C, J, '[3,"r","e",null,"e1",0]', INVALID_PACKET)
invalid("room_event_seq_too_large", C, M, pack([ROOM_EVENT, "r", "e", None, "e1", 2**53]),
        INVALID_PACKET)
invalid("gap_count_zero", C, J, '[9,"r",0]', INVALID_PACKET)
invalid("gap_count_float", C, J, "[9,null,1.5]", INVALID_PACKET)
invalid("resume_positions_not_map", S, J, '[10,"s","t",[],2]', INVALID_PACKET, 2)
invalid("resume_negative_seq", S, J, '[10,"s","t",{"r":["e1",-1]},6]', INVALID_PACKET, 6)
invalid("resume_bad_token", S, M, pack([RESUME, "s", "bad token", {}, 15]), INVALID_PACKET,
        15)
invalid("error_code_invalid", C, J, '[8,null,"Not-A-Code","x"]', INVALID_PACKET)
invalid("error_code_empty", S, J, '[8,3,"","x"]', INVALID_PACKET)
invalid("error_message_not_string", S, M, pack([ERROR, None, "forbidden", 1]),
        INVALID_PACKET)

# Ack ids out of range or of the wrong type: nothing to salvage.
invalid("ack_id_zero", S, J, '[1,"x",null,0]', INVALID_PACKET)
invalid("ack_id_negative", S, J, "[4,\"r\",-1]", INVALID_PACKET)
invalid("ack_id_2_pow_31", S, J, '[5,"r",2147483648]', INVALID_PACKET)
invalid("ack_id_float", S, J, '[1,"x",null,1.0]', INVALID_PACKET)
invalid("ack_id_string", S, J, '[1,"x",null,"1"]', INVALID_PACKET)
invalid("ack_id_true", S, J, '[1,"x",null,true]', INVALID_PACKET)
invalid("ack_id_uint64_msgpack", S, M, pack([ACK, 2**64 - 1, None]), INVALID_PACKET)
invalid("ack_packet_ack_id_zero", C, J, "[7,0,null]", INVALID_PACKET)
invalid("error_packet_ack_id_zero", C, J, '[8,0,"forbidden",""]', INVALID_PACKET)

# Names.
invalid("name_129_ascii_bytes", S, J, '[1,"' + "e" * 129 + '",null,9]', INVALID_NAME, 9)
invalid("name_43_three_byte_chars", S, J, '[4,"' + "房" * 43 + '",10]', INVALID_NAME, 10)
invalid("name_129_bytes_msgpack", C, M, pack([EVENT, "🎉" * 32 + "x", None]), INVALID_NAME)
invalid("name_empty", S, J, '[4,"",2]', INVALID_NAME, 2)
invalid("room_name_empty_in_gap", C, J, '[9,"",1]', INVALID_NAME)
invalid("name_newline_escape", S, J, '[1,"a\\nb",null]', INVALID_NAME)
invalid("name_nul_msgpack", S, M, pack([EMIT, "a\x00b", None, 16]), INVALID_NAME, 16)
invalid("name_del_char", S, J, '[5,"a\x7fb"]', INVALID_NAME)
invalid("name_c1_char", C, J, '[2,"a\x85b",null]', INVALID_NAME)
invalid("name_reserved_event", S, J, '[1,"$ping",null,4]', INVALID_NAME, 4)
invalid("name_reserved_room", S, M, pack([PUBLISH, "$system", "e", None, 17]), INVALID_NAME,
        17)
invalid("name_reserved_room_in_resume", S, J, '[10,"s","t",{"$all":["e1",1]},18]',
        INVALID_NAME, 18)
invalid("name_lone_surrogate_escape", S, J, '[1,"\\ud800",null,3]', INVALID_NAME, 3)

# Data rules.
invalid("data_lone_surrogate_escape", S, J, '[1,"x","\\ud800",3]', INVALID_PACKET, 3)
invalid("data_lone_low_surrogate_in_key", S, J, '[1,"x",{"\\udc00":1}]', INVALID_PACKET)
invalid("data_lone_surrogate_in_error_message", C, J, '[8,null,"forbidden","\\udfff"]',
        INVALID_PACKET)
invalid("data_nesting_33_json", S, J, '[1,"x",' + json.dumps(nested(33)) + ",19]",
        INVALID_PACKET, 19)
invalid("data_nesting_33_msgpack", C, M, pack([EVENT, "x", nested(33)]), INVALID_PACKET)
invalid("data_integer_2_pow_64_json", S, J, '[1,"x",18446744073709551616]', INVALID_PACKET)
invalid("data_integer_below_int64_json", C, J, '[2,"x",[-9223372036854775809]]',
        INVALID_PACKET)
invalid("data_float_overflow_json", S, J, '[1,"x",1e400]', INVALID_PACKET)
invalid("data_float_nan_msgpack", S, M, pack([EMIT, "x", float("nan")]), INVALID_PACKET)
invalid("data_float_infinity_msgpack", C, M, pack([ACK, 1, float("-inf")]), INVALID_PACKET)
invalid("data_map_int_key_msgpack", S, M, pack([EMIT, "x", {1: "one"}, 20]), INVALID_PACKET, 20)
invalid("data_map_binary_key_msgpack", S, M, pack([EMIT, "x", {b"k": 1}]), INVALID_PACKET)
invalid("data_map_array_key_msgpack", S, M,
        bytes([0x93, EMIT, 0xA1]) + b"x" + bytes([0x81, 0x91, 0x01, 0x01]), INVALID_PACKET)
invalid("data_ext_type_msgpack", S, M, pack([EMIT, "x", msgpack.ExtType(5, b"\x01")]),
        INVALID_PACKET)
invalid("data_timestamp_msgpack", C, M,
        bytes([0x93, EVENT, 0xA1]) + b"x" + bytes.fromhex("d6ff00000001"), INVALID_PACKET)

# Malformed frames.
invalid("json_syntax_error", S, J, '[1,"x",nul]', MALFORMED)
invalid("json_truncated", S, J, '[1,"x",', MALFORMED)
invalid("json_empty_text", C, J, "", MALFORMED)
invalid("json_only_whitespace", S, J, " \n", MALFORMED)
invalid("json_trailing_garbage", S, J, '[1,"x",null]x', MALFORMED)
invalid("json_two_documents", S, J, '[1,"x",null][1,"y",null]', MALFORMED)
invalid("json_trailing_comma", S, J, '[1,"x",null,]', MALFORMED)
invalid("json_single_quotes", S, J, "[1,'x',null]", MALFORMED)
invalid("json_raw_control_char_in_string", S, J, '[1,"a\tb",null]', MALFORMED)
invalid("json_byte_order_mark", S, J, '\ufeff[1,"x",null]', MALFORMED)
invalid("json_nan", S, J, '[1,"x",NaN]', MALFORMED)
invalid("json_infinity", C, J, '[2,"x",Infinity]', MALFORMED)
invalid("json_negative_infinity", S, J, '[1,"x",-Infinity]', MALFORMED)
invalid("json_invalid_utf8_text_frame", S, J, b'[1,"\xff",null]', MALFORMED, ws_close=1007)
invalid("json_utf8_encoded_surrogate_text_frame", S, J, b'[1,"x","\xed\xa0\x80"]',
        MALFORMED, ws_close=1007)
invalid("msgpack_invalid_utf8_in_str", S, M, bytes.fromhex("9301a2ff00c0"), MALFORMED)
invalid("msgpack_utf8_encoded_surrogate", C, M, bytes.fromhex("9302a178a3eda080"), MALFORMED)
invalid("msgpack_truncated", S, M, pack([EMIT, "chat", None, 1])[:-1], MALFORMED)
invalid("msgpack_truncated_str", S, M, bytes.fromhex("9301a563"), MALFORMED)
invalid("msgpack_empty", S, M, b"", MALFORMED)
invalid("msgpack_trailing_garbage", S, M, pack([EMIT, "x", None]) + b"\x00", MALFORMED)
invalid("msgpack_never_used_byte", C, M, b"\xc1", MALFORMED)
invalid("msgpack_array_length_lies", S, M, bytes.fromhex("dd7fffffff01"), MALFORMED)

# Frame types.
invalid("json_binary_frame", S, J, b'[1,"x",null]', WRONG_FRAME_TYPE)
invalid("json_binary_frame_to_client", C, J, b"[7,1,null]", WRONG_FRAME_TYPE)
invalid("msgpack_text_frame", S, M, '[1,"x",null]', WRONG_FRAME_TYPE)
invalid("msgpack_text_frame_to_client", C, M, "\x93\x02\xa1x\xc0", WRONG_FRAME_TYPE)


# --- output -----------------------------------------------------------------------------


def documents() -> dict[str, str]:
    """The text of each vector file, by file name."""
    valid_doc = {
        "version": VERSION,
        "description": (
            "Valid packets of eventbus protocol v1. For each vector, encoding the logical"
            " packet must give exactly the bytes of 'msgpack' (lowercase hex) and the text"
            " of 'json' (null when the packet holds binary data, which JSON cannot carry:"
            " encoding must then fail with 'json_error'); decoding either must give the"
            " logical packet, by a receiver of the role opposite to 'sender'. Binary"
            " values are written {\"$binary\": hex}. See README.md."
        ),
        "vectors": _valid,
    }
    invalid_doc = {
        "version": VERSION,
        "description": (
            "Frames a receiver of protocol v1 must reject. Decoding 'text' (a text frame)"
            " or 'hex' (the frame's bytes) with the named codec, as 'receiver', must fail"
            " with error code 'error'; the error reply carries 'ack_id'. A text frame with"
            " invalid UTF-8 ('ws_close') is refused by the WebSocket layer with that close"
            " code before any codec sees it. See README.md."
        ),
        "vectors": _invalid,
    }
    return {
        "valid.json": _dump(valid_doc),
        "invalid.json": _dump(invalid_doc),
    }


def _dump(document: dict[str, Any]) -> str:
    return json.dumps(document, ensure_ascii=False, indent=2) + "\n"


def _check_unique(vectors: list[dict[str, Any]]) -> None:
    names = [vector["name"] for vector in vectors]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise SystemExit(f"duplicate vector names: {', '.join(duplicates)}")


def main(argv: list[str]) -> int:
    _check_unique(_valid)
    _check_unique(_invalid)
    check = argv[1:] == ["--check"]
    if argv[1:] and not check:
        print(__doc__, file=sys.stderr)
        return 2
    stale = []
    for name, text in documents().items():
        path = HERE / name
        if check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8", newline="\n")
            print(f"wrote {path} ({len(text)} characters)")
    if stale:
        print(f"out of date: {', '.join(stale)}; run {Path(__file__).name}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
