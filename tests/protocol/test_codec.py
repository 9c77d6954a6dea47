"""Focused unit tests of the codecs, their negotiation, and the error catalogue."""

from __future__ import annotations

import json
from typing import Any

import msgpack
import pytest

from eventbus import errors
from eventbus.codes import ErrorCode
from eventbus.errors import (
    InternalError,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    RequestError,
    UnsupportedSubprotocol,
    error_from_code,
)
from eventbus.protocol import (
    DEFAULT_SUBPROTOCOL,
    JSON_SUBPROTOCOL,
    MSGPACK_SUBPROTOCOL,
    NAME_MAX_BYTES,
    Codec,
    Emit,
    ErrorReply,
    Event,
    Join,
    JsonCodec,
    MsgpackCodec,
    Packet,
    Position,
    Resume,
    Role,
    RoomEvent,
    Welcome,
    codec_for_subprotocol,
    select_subprotocol,
)

CODEC_CLASSES = [JsonCodec, MsgpackCodec]


def as_message(codec: Codec, payload: bytes) -> str | bytes:
    """What the transport hands a codec for an encoded payload."""
    return payload if codec.binary else payload.decode("utf-8")


def encode_wire(codec_class: type[Codec], wire: Any) -> str | bytes:
    """A raw array as a message for ``codec_class``, bypassing the packet classes."""
    if codec_class is JsonCodec:
        return json.dumps(wire, ensure_ascii=False, separators=(",", ":"))
    packed: bytes = msgpack.packb(wire, use_bin_type=True)
    return packed


# --- negotiation ------------------------------------------------------------------------


def test_no_subprotocol_offered_selects_none() -> None:
    assert select_subprotocol([]) is None
    assert select_subprotocol(()) is None
    assert codec_for_subprotocol(None) is JsonCodec
    assert DEFAULT_SUBPROTOCOL == JSON_SUBPROTOCOL


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [
        ([JSON_SUBPROTOCOL], JSON_SUBPROTOCOL),
        ([MSGPACK_SUBPROTOCOL], MSGPACK_SUBPROTOCOL),
        ([MSGPACK_SUBPROTOCOL, JSON_SUBPROTOCOL], MSGPACK_SUBPROTOCOL),
        ([JSON_SUBPROTOCOL, MSGPACK_SUBPROTOCOL], JSON_SUBPROTOCOL),
        (["chat", "eventbus.v2.cbor", MSGPACK_SUBPROTOCOL, JSON_SUBPROTOCOL],
         MSGPACK_SUBPROTOCOL),
    ],
)
def test_first_supported_subprotocol_in_client_order_wins(
    offered: list[str], chosen: str
) -> None:
    assert select_subprotocol(offered) == chosen


@pytest.mark.parametrize("offered", [["chat"], ["eventbus.v2.json", "EVENTBUS.V1.JSON"]])
def test_only_unknown_subprotocols_are_rejected(offered: list[str]) -> None:
    # The sans-IO layer knows no HTTP: the server turns this into a 400.
    with pytest.raises(UnsupportedSubprotocol) as info:
        select_subprotocol(offered)
    assert isinstance(info.value, ValueError)
    assert JSON_SUBPROTOCOL in str(info.value)
    assert MSGPACK_SUBPROTOCOL in str(info.value)


def test_codec_for_subprotocol() -> None:
    assert codec_for_subprotocol(JSON_SUBPROTOCOL) is JsonCodec
    assert codec_for_subprotocol(MSGPACK_SUBPROTOCOL) is MsgpackCodec
    for codec_class in CODEC_CLASSES:
        assert codec_for_subprotocol(codec_class.subprotocol) is codec_class
    assert (JsonCodec.name, JsonCodec.binary) == ("json", False)
    assert (MsgpackCodec.name, MsgpackCodec.binary) == ("msgpack", True)


# --- encode once, decode anywhere -------------------------------------------------------

BROADCAST = RoomEvent("lobby", "chat", {"text": "héllo", "n": [1, 2.5, None]}, "e1", 41)


@pytest.mark.parametrize("codec_class", CODEC_CLASSES)
def test_encoding_is_repeatable_and_returns_bytes(codec_class: type[Codec]) -> None:
    codec = codec_class(Role.SERVER)
    first = codec.encode(BROADCAST)
    assert type(first) is bytes
    assert codec.encode(BROADCAST) == first
    # Another codec of the same class, even with another max_name, writes the same bytes.
    assert codec_class(Role.SERVER, max_name=5).encode(BROADCAST) == first


@pytest.mark.parametrize("codec_class", CODEC_CLASSES)
def test_bytes_encoded_once_decode_for_every_receiver(codec_class: type[Codec]) -> None:
    payload = codec_class(Role.SERVER).encode(BROADCAST)
    receivers = [codec_class(Role.CLIENT) for _ in range(3)]
    assert all(r.decode(as_message(r, payload)) == BROADCAST for r in receivers)
    # The sender's own role does not receive room events.
    with pytest.raises(RemoteProtocolError) as info:
        codec_class(Role.SERVER).decode(as_message(receivers[0], payload))
    assert info.value.code == ErrorCode.UNKNOWN_TYPE


@pytest.mark.parametrize("codec_class", CODEC_CLASSES)
def test_error_reply_with_an_error_code_member_encodes(codec_class: type[Codec]) -> None:
    """Servers build replies from RequestError.code, which is an ErrorCode member."""
    reply = ErrorReply(5, RemoteProtocolError("bad").code, "bad")
    assert type(reply.code) is ErrorCode
    payload = codec_class(Role.SERVER).encode(reply)
    assert payload == codec_class(Role.SERVER).encode(ErrorReply(5, "invalid_packet", "bad"))
    receiver = codec_class(Role.CLIENT)
    assert receiver.decode(as_message(receiver, payload)) == reply


# --- unencodable ------------------------------------------------------------------------


class _Thing:
    pass


UNENCODABLE_EVERYWHERE = {
    "integer_2_pow_64": 2**64,
    "integer_below_int64": -(2**63) - 1,
    "nan": float("nan"),
    "infinity": float("inf"),
    "negative_infinity": float("-inf"),
    "lone_surrogate": "a\ud800b",
    "lone_surrogate_key": {"\udc00": 1},
    "int_key": {1: "one"},
    "bytes_key": {b"k": 1},
    "set": {1, 2},
    "tuple": (1, 2),
    "object": _Thing(),
    "bytearray": bytearray(b"x"),
    "nested_33": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]],
}


@pytest.mark.parametrize("codec_class", CODEC_CLASSES)
@pytest.mark.parametrize("value", UNENCODABLE_EVERYWHERE.values(), ids=UNENCODABLE_EVERYWHERE)
def test_unencodable_data(codec_class: type[Codec], value: Any) -> None:
    codec = codec_class(Role.CLIENT)
    with pytest.raises(LocalProtocolError) as info:
        codec.encode(Emit("e", value))
    assert info.value.code == ErrorCode.UNENCODABLE
    assert isinstance(info.value, ProtocolError)
    assert not isinstance(info.value, RemoteProtocolError)


def test_depth_32_is_encodable() -> None:
    value: Any = []
    for _ in range(31):
        value = [value]
    for codec_class in CODEC_CLASSES:
        codec_class(Role.CLIENT).encode(Emit("e", value))
        with pytest.raises(LocalProtocolError):
            codec_class(Role.CLIENT).encode(Emit("e", [value]))


def test_binary_data_needs_msgpack() -> None:
    packet = Event("file", {"chunk": b"\x00\x01"})
    with pytest.raises(LocalProtocolError, match="binary") as info:
        JsonCodec(Role.SERVER).encode(packet)
    assert info.value.code == ErrorCode.UNENCODABLE
    assert MsgpackCodec(Role.SERVER).encode(packet)


@pytest.mark.parametrize("codec_class", CODEC_CLASSES)
def test_lone_surrogate_in_a_name_is_unencodable(codec_class: type[Codec]) -> None:
    with pytest.raises(LocalProtocolError):
        codec_class(Role.CLIENT).encode(Join("a\ud800"))


@pytest.mark.parametrize("codec_class", CODEC_CLASSES)
def test_integer_range_edges_encode(codec_class: type[Codec]) -> None:
    codec = codec_class(Role.CLIENT)
    receiver = codec_class(Role.SERVER)
    packet = Emit("n", [2**64 - 1, -(2**63), 2**63 - 1])
    assert receiver.decode(as_message(receiver, codec.encode(packet))) == packet


# --- errors.py --------------------------------------------------------------------------

KNOWN = {
    ErrorCode.FORBIDDEN: errors.Forbidden,
    ErrorCode.UNKNOWN_EVENT: errors.UnknownEvent,
    ErrorCode.INVALID_PAYLOAD: errors.InvalidPayload,
    ErrorCode.RATE_LIMITED: errors.RateLimited,
    ErrorCode.TOO_MANY_ROOMS: errors.TooManyRooms,
    ErrorCode.TOO_MANY_PENDING: errors.TooManyPending,
    ErrorCode.RESUME_FAILED: errors.ResumeFailed,
    ErrorCode.UNAVAILABLE: errors.Unavailable,
    ErrorCode.INTERNAL_ERROR: errors.InternalError,
}
PROTOCOL_CODES = [
    ErrorCode.MALFORMED, ErrorCode.WRONG_FRAME_TYPE, ErrorCode.UNKNOWN_TYPE,
    ErrorCode.INVALID_PACKET, ErrorCode.INVALID_NAME, ErrorCode.UNENCODABLE,
]


def test_every_error_code_is_known_or_a_protocol_code() -> None:
    assert set(KNOWN) | set(PROTOCOL_CODES) == set(ErrorCode)


@pytest.mark.parametrize(("code", "cls"), KNOWN.items())
def test_error_from_known_code(code: ErrorCode, cls: type[RequestError]) -> None:
    for wire_code in (code, code.value):
        exc = error_from_code(wire_code, "why")
        assert type(exc) is cls
        assert (exc.code, exc.message) == (code, "why")
        assert str(exc) == f"[{code.value}] why"
    assert cls.default_code == code
    assert cls().code == code


@pytest.mark.parametrize("code", PROTOCOL_CODES)
def test_error_from_protocol_code(code: ErrorCode) -> None:
    exc = error_from_code(code.value, "you broke it")
    assert type(exc) is ProtocolError
    assert (exc.code, exc.message) == (code, "you broke it")


@pytest.mark.parametrize("code", ["brand_new_code", "x"])
def test_error_from_unknown_code_keeps_the_code(code: str) -> None:
    exc = error_from_code(code, "")
    assert type(exc) is InternalError
    assert exc.code == code
    assert str(exc) == f"[{code}]"


def test_error_defaults() -> None:
    assert RemoteProtocolError("x").code == ErrorCode.INVALID_PACKET
    assert RemoteProtocolError("x").ack_id is None
    assert LocalProtocolError("x").code == ErrorCode.UNENCODABLE
    assert RequestError("x").code == ErrorCode.INTERNAL_ERROR
    assert RequestError("x", code="custom").code == "custom"


# --- salvaged ack ids -------------------------------------------------------------------

DEEP_33 = UNENCODABLE_EVERYWHERE["nested_33"]
SALVAGE = [
    # (receiver, wire, expected code, expected ack id)
    ("server", [1, "", None, 5], ErrorCode.INVALID_NAME, 5),
    ("server", [1, "$x", None, 6], ErrorCode.INVALID_NAME, 6),
    ("server", [1, 7, None, 7], ErrorCode.INVALID_PACKET, 7),
    ("server", [1, "e", DEEP_33, 8], ErrorCode.INVALID_PACKET, 8),
    ("server", [1, "", None], ErrorCode.INVALID_NAME, None),
    ("server", [1, "e", None, 9, 10], ErrorCode.INVALID_PACKET, None),
    ("server", [1, "e", None, 0], ErrorCode.INVALID_PACKET, None),
    ("server", [1, "e", None, True], ErrorCode.INVALID_PACKET, None),
    ("server", [1, "e", None, 2**31], ErrorCode.INVALID_PACKET, None),
    ("server", [4, "", 11], ErrorCode.INVALID_NAME, 11),
    ("server", [5, None, 12], ErrorCode.INVALID_PACKET, 12),
    ("server", [6, "room", "", None, 13], ErrorCode.INVALID_NAME, 13),
    ("server", [6, "room", "e"], ErrorCode.INVALID_PACKET, None),  # too few fields
    ("server", [10, "s", "bad token", {}, 14], ErrorCode.INVALID_PACKET, 14),
    ("server", [10, "s", "t", {"r": ["e", -1]}, 15], ErrorCode.INVALID_PACKET, 15),
    # Answers are not requests: nothing to salvage.
    ("server", [7, 16, DEEP_33], ErrorCode.INVALID_PACKET, None),
    ("server", [8, 17, "Bad Code", ""], ErrorCode.INVALID_PACKET, None),
    ("client", [2, "", None, 18], ErrorCode.INVALID_NAME, None),
    # Unknown types are rejected before any field is read.
    ("server", [2, "e", None, 19], ErrorCode.UNKNOWN_TYPE, None),
    ("client", [1, "e", None, 20], ErrorCode.UNKNOWN_TYPE, None),
]


@pytest.mark.parametrize("codec_class", CODEC_CLASSES)
@pytest.mark.parametrize(("receiver", "wire", "code", "ack_id"), SALVAGE)
def test_salvaged_ack_id(
    codec_class: type[Codec], receiver: str, wire: list[Any], code: str, ack_id: int | None
) -> None:
    codec = codec_class(Role(receiver))
    with pytest.raises(RemoteProtocolError) as info:
        codec.decode(encode_wire(codec_class, wire))
    assert (info.value.code, info.value.ack_id) == (code, ack_id)


# --- max_name ---------------------------------------------------------------------------


@pytest.mark.parametrize("codec_class", CODEC_CLASSES)
def test_max_name_limits_names(codec_class: type[Codec]) -> None:
    codec = codec_class(Role.SERVER, max_name=10)
    assert codec.max_name == 10
    for name in ("a" * 10, "é" * 5, "房间房", "🎉🎉a"):
        assert len(name.encode()) <= 10
        assert codec.decode(encode_wire(codec_class, [4, name])) == Join(name)
    for name in ("a" * 11, "é" * 5 + "a", "房间房间", "🎉🎉🎉"):
        assert len(name.encode()) > 10
        with pytest.raises(RemoteProtocolError) as info:
            codec.decode(encode_wire(codec_class, [4, name, 3]))
        assert (info.value.code, info.value.ack_id) == (ErrorCode.INVALID_NAME, 3)
    # The limit applies to every name: events, rooms, resume positions.
    long_names = [
        [1, "e" * 11, None], [6, "r", "e" * 11, None], [10, "s", "t", {"r" * 11: ["e", 0]}],
    ]
    for wire in long_names:
        with pytest.raises(RemoteProtocolError) as info:
            codec.decode(encode_wire(codec_class, wire))
        assert info.value.code == ErrorCode.INVALID_NAME
    # The receiving client applies it too.
    client = codec_class(Role.CLIENT, max_name=10)
    with pytest.raises(RemoteProtocolError):
        client.decode(encode_wire(codec_class, [3, "r", "e" * 11, None, "e", 1]))


@pytest.mark.parametrize("codec_class", CODEC_CLASSES)
def test_default_max_name(codec_class: type[Codec]) -> None:
    codec = codec_class(Role.SERVER)
    assert codec.max_name == NAME_MAX_BYTES == 128
    assert codec.decode(encode_wire(codec_class, [4, "r" * 128])) == Join("r" * 128)
    assert codec_class(Role.SERVER, max_name=1).decode(encode_wire(codec_class, [4, "r"]))


@pytest.mark.parametrize("codec_class", CODEC_CLASSES)
@pytest.mark.parametrize("max_name", [0, -1, 129, 1000])
def test_max_name_out_of_range(codec_class: type[Codec], max_name: int) -> None:
    with pytest.raises(ValueError, match="max_name"):
        codec_class(Role.SERVER, max_name=max_name)


# --- decoding details -------------------------------------------------------------------


def test_json_whitespace_around_the_document_is_accepted() -> None:
    codec = JsonCodec(Role.SERVER)
    assert codec.decode(' \t\r\n[1, "e", null, 3]\n ') == Emit("e", None, 3)


def test_json_escapes_decode() -> None:
    codec = JsonCodec(Role.CLIENT)
    packet = codec.decode('[2,"caf\\u00e9","\\ud83d\\ude00\\n"]')
    assert packet == Event("café", "😀\n")


def test_welcome_ignores_unknown_options() -> None:
    codec = JsonCodec(Role.CLIENT)
    text = (
        '[0,"sid","tok",{"ping_interval":1,"ping_timeout":2,"max_frame":3,"max_name":4,'
        '"max_rooms":5,"max_pending":6,"rate":7,"burst":8,"from_the_future":{"x":[1]}}]'
    )
    packet = codec.decode(text)
    assert isinstance(packet, Welcome)
    assert packet.options.burst == 8
    # max_elements came later in v1: a server that does not send it has the default.
    assert packet.options.max_elements == 10_000
    assert codec.encode(packet).decode() == text.replace(
        ',"from_the_future":{"x":[1]}', ',"max_elements":10000')


def test_reserved_names_are_fine_from_the_server() -> None:
    assert JsonCodec(Role.CLIENT).decode('[2,"$presence",null]') == Event("$presence")
    with pytest.raises(RemoteProtocolError) as info:
        JsonCodec(Role.SERVER).decode('[1,"$presence",null]')
    assert info.value.code == ErrorCode.INVALID_NAME


def test_resume_positions_keep_their_order() -> None:
    codec = MsgpackCodec(Role.SERVER)
    packet = Resume("s", "t", {"b": Position("e", 2), "a": Position("e", 0)}, 4)
    decoded = codec.decode(MsgpackCodec(Role.CLIENT).encode(packet))
    assert decoded == packet
    assert isinstance(decoded, Resume)
    assert list(decoded.positions) == ["b", "a"]


@pytest.mark.parametrize(
    "packet",
    [Emit("e"), Join("r", 1), ErrorReply(None, "forbidden")],
    ids=["emit", "join", "error"],
)
def test_repr_and_wrong_frame_types(packet: Packet) -> None:
    for codec_class in CODEC_CLASSES:
        codec = codec_class(Role.SERVER)
        assert "max_name=128" in repr(codec)
        payload = codec_class(Role.CLIENT).encode(packet)
        wrong = payload.decode("latin-1") if codec.binary else payload
        with pytest.raises(RemoteProtocolError) as info:
            codec.decode(wrong)
        assert info.value.code == ErrorCode.WRONG_FRAME_TYPE


@pytest.mark.parametrize("codec", [JsonCodec(Role.SERVER), MsgpackCodec(Role.SERVER)])
def test_a_message_that_fails_to_load_counts_no_values(codec: Any) -> None:
    # The count is what the rate limit charges: it must not be the previous packet's.
    big = [1, "e", list(range(500))]
    codec.decode(json.dumps(big) if not codec.binary else msgpack.packb(big))
    assert codec.elements == 501
    with pytest.raises(RemoteProtocolError):
        codec.decode("[1," if not codec.binary else b"\xc1")
    assert codec.elements == 0


def test_encode_may_skip_a_check_already_made_but_json_still_refuses_binary() -> None:
    packet = Event("e", {"n": [1, 2]})
    for codec in (JsonCodec(Role.SERVER), MsgpackCodec(Role.SERVER)):
        assert codec.encode(packet, checked=True) == codec.encode(packet)
    with pytest.raises(LocalProtocolError):
        JsonCodec(Role.SERVER).encode(Event("e", b"\x00"), checked=True)
