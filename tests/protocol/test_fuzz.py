"""Property tests: the codecs take any input without failing in an unexpected way.

Decoding anything gives a packet or a RemoteProtocolError, never another exception;
whatever decodes re-encodes and decodes to the same packet; valid packets survive
an encode/decode round trip.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventbus.codes import ErrorCode
from eventbus.errors import LocalProtocolError, RemoteProtocolError
from eventbus.protocol import ACK_ID_MAX, Codec, JsonCodec, MsgpackCodec, Packet, Role

from ..strategies import (
    client_packets,
    json_values,
    msgpack_values,
    server_packets,
    wire_like,
)
from .vectorlib import strict_packet

FUZZ = settings(
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

RECEIVERS: list[Codec] = [
    codec_class(role) for codec_class in (JsonCodec, MsgpackCodec) for role in Role
]
JSON_RECEIVERS = [codec for codec in RECEIVERS if isinstance(codec, JsonCodec)]
MSGPACK_RECEIVERS = [codec for codec in RECEIVERS if isinstance(codec, MsgpackCodec)]
OTHER_ROLE = {Role.CLIENT: Role.SERVER, Role.SERVER: Role.CLIENT}


def _message(codec: Codec, payload: bytes) -> str | bytes:
    """What a transport hands the codec: text frames arrive decoded."""
    return payload if codec.binary else payload.decode("utf-8")


def decode_or_reject(codec: Codec, message: str | bytes) -> Packet | None:
    """Decode; a packet must round-trip, and the only failure allowed is
    RemoteProtocolError with a code (and an ack id that is None or valid)."""
    try:
        packet = codec.decode(message)
    except RemoteProtocolError as exc:
        _check_rejection(exc)
        return None
    sender = type(codec)(OTHER_ROLE[codec.role])
    again = codec.decode(_message(codec, sender.encode(packet)))
    assert strict_packet(again) == strict_packet(packet)
    return packet


def _check_rejection(exc: RemoteProtocolError) -> None:
    assert type(exc.code) in (str, ErrorCode)
    assert exc.code in set(ErrorCode)
    assert exc.ack_id is None or 0 < exc.ack_id <= ACK_ID_MAX


def _contains_bytes(value: Any) -> bool:
    if isinstance(value, bytes):
        return True
    if isinstance(value, list):
        return any(map(_contains_bytes, value))
    if isinstance(value, dict):
        return any(map(_contains_bytes, value.values()))
    return False


@FUZZ
@given(st.binary(max_size=200))
def test_arbitrary_bytes(payload: bytes) -> None:
    for codec in RECEIVERS:
        decode_or_reject(codec, payload)
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return
    for codec in JSON_RECEIVERS:
        decode_or_reject(codec, text)


@FUZZ
@given(st.text(max_size=200))
def test_arbitrary_text(text: str) -> None:
    for codec in RECEIVERS:
        decode_or_reject(codec, text)
    for codec in MSGPACK_RECEIVERS:
        decode_or_reject(codec, text.encode("utf-8"))


@FUZZ
@given(st.one_of(json_values(), wire_like(json_values(max_leaves=5))), st.booleans())
def test_arbitrary_json_documents(value: Any, ensure_ascii: bool) -> None:
    text = json.dumps(value, ensure_ascii=ensure_ascii)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a raw lone surrogate, which no text frame can carry
        text = json.dumps(value, ensure_ascii=True)
    for codec in RECEIVERS:
        decode_or_reject(codec, text)


@FUZZ
@given(st.one_of(msgpack_values(), wire_like(msgpack_values(max_leaves=5), msgpack_ints=True)))
def test_arbitrary_msgpack_documents(value: Any) -> None:
    payload = msgpack.packb(value, use_bin_type=True)
    for codec in MSGPACK_RECEIVERS:
        decode_or_reject(codec, payload)


def _any_packet() -> st.SearchStrategy[tuple[Role, Packet]]:
    return st.one_of(
        st.tuples(st.just(Role.CLIENT), client_packets(binary=True)),
        st.tuples(st.just(Role.SERVER), server_packets(binary=True)),
    )


@FUZZ
@given(_any_packet(), st.sampled_from([JsonCodec, MsgpackCodec]))
def test_valid_packets_round_trip(sent: tuple[Role, Packet], codec_class: type[Codec]) -> None:
    sender_role, packet = sent
    sender = codec_class(sender_role)
    receiver = codec_class(OTHER_ROLE[sender_role])
    if codec_class is JsonCodec and _contains_bytes(attrs.asdict(packet)):
        with pytest.raises(LocalProtocolError, match="binary") as info:
            sender.encode(packet)
        assert info.value.code == ErrorCode.UNENCODABLE
        return
    payload = sender.encode(packet)
    assert type(payload) is bytes
    decoded = receiver.decode(_message(receiver, payload))
    assert strict_packet(decoded) == strict_packet(packet)
    assert decoded == packet
    # Encoding is a pure function of the packet.
    assert sender.encode(decoded) == payload


@FUZZ
@given(_any_packet(), st.sampled_from([JsonCodec, MsgpackCodec]), st.data())
def test_mutated_valid_frames(
    sent: tuple[Role, Packet], codec_class: type[Codec], data: st.DataObject
) -> None:
    sender_role, packet = sent
    try:
        payload = bytearray(codec_class(sender_role).encode(packet))
    except LocalProtocolError:
        payload = bytearray(MsgpackCodec(sender_role).encode(packet))
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        index = data.draw(st.integers(0, len(payload)), label="index")
        action = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if action == "flip" and index < len(payload):
            payload[index] ^= 1 << data.draw(st.integers(0, 7), label="bit")
        elif action == "insert":
            payload.insert(index, data.draw(st.integers(0, 255), label="byte"))
        elif action == "delete" and index < len(payload):
            del payload[index]
        elif action == "truncate":
            del payload[index:]
    mutated = bytes(payload)
    receiver_role = OTHER_ROLE[sender_role]
    for codec in (JsonCodec(receiver_role), MsgpackCodec(receiver_role)):
        decode_or_reject(codec, mutated)
        try:
            text = mutated.decode("utf-8")
        except UnicodeDecodeError:
            continue
        decode_or_reject(codec, text)
