"""Decoding edge cases that the vectors and the fuzzers do not reach reliably: each
input is refused with a ``RemoteProtocolError`` carrying the catalogue code the
spec gives it, and nothing else escapes the codec.

Bytes in, errors out: no I/O.
"""

from __future__ import annotations

import json
from typing import NoReturn

import msgpack
import pytest

from eventbus import ErrorCode
from eventbus.errors import RemoteProtocolError
from eventbus.protocol import MAX_DEPTH, JsonCodec, MsgpackCodec, PacketType, Role

EMIT = int(PacketType.EMIT)
RESUME = int(PacketType.RESUME)


def refusal(codec: JsonCodec | MsgpackCodec, message: str | bytes) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as caught:
        codec.decode(message)
    return caught.value


def test_json_nested_beyond_the_decoders_recursion_limit_is_an_invalid_packet() -> None:
    # Deeper than Python's recursion limit (1000): the decoder itself gives up.
    depth = 3000
    message = f'[{EMIT}, "e", ' + "[" * depth + "]" * depth + ", 1]"
    error = refusal(JsonCodec(Role.SERVER), message)
    assert error.code == ErrorCode.INVALID_PACKET
    assert "nested deeper" in str(error)


def test_json_integer_of_too_many_digits_is_malformed() -> None:
    # Python refuses to convert more than 4300 digits (sys.get_int_max_str_digits).
    error = refusal(JsonCodec(Role.SERVER), f'[{EMIT}, "e", {"9" * 5000}, 1]')
    assert error.code == ErrorCode.MALFORMED


def test_msgpack_map_with_an_array_key_is_an_invalid_packet() -> None:
    # [EMIT, "e", {[1]: 2}, 1]: an array key is unhashable in Python.
    message = bytes([0x94, EMIT, 0xA1, ord("e"), 0x81, 0x91, 0x01, 0x02, 0x01])
    error = refusal(MsgpackCodec(Role.SERVER), message)
    assert error.code == ErrorCode.INVALID_PACKET
    assert "map keys must be strings" in str(error)


def test_msgpack_map_with_an_integer_key_is_an_invalid_packet() -> None:
    message = msgpack.packb([EMIT, "e", {"fine": {1: 2}}, 1])
    error = refusal(MsgpackCodec(Role.SERVER), message)
    assert error.code == ErrorCode.INVALID_PACKET
    assert "map keys must be strings" in str(error)


@pytest.mark.parametrize("position", [[1], "e1:5", ["e1", 5, 6]])
def test_resume_position_that_is_not_epoch_and_seq_is_an_invalid_packet(
    position: object,
) -> None:
    message = msgpack.packb([RESUME, "s" * 22, "t" * 43, {"lobby": position}, 1])
    error = refusal(MsgpackCodec(Role.SERVER), message)
    assert error.code == ErrorCode.INVALID_PACKET
    assert "[epoch, seq]" in str(error)


def test_msgpack_nested_beyond_the_unpackers_stack_is_an_invalid_packet() -> None:
    # msgpack's C unpacker stops at 1024 levels, before the packet rules look.
    message = bytes([0x94, EMIT, 0xA1, ord("e")]) + b"\x91" * 2000 + b"\xc0\x01"
    error = refusal(MsgpackCodec(Role.SERVER), message)
    assert error.code == ErrorCode.INVALID_PACKET
    assert "nested deeper" in str(error)


@pytest.mark.parametrize("innermost", [{}, []])
def test_a_map_or_array_one_level_too_deep_is_an_invalid_packet(innermost: object) -> None:
    data = innermost
    for _ in range(MAX_DEPTH):
        data = {"a": data}
    error = refusal(JsonCodec(Role.SERVER), json.dumps([EMIT, "e", data, 1]))
    assert error.code == ErrorCode.INVALID_PACKET
    assert f"nested deeper than {MAX_DEPTH} levels" in str(error)


@pytest.mark.parametrize("raised", [msgpack.OutOfData, msgpack.exceptions.BufferFull])
def test_any_unpack_error_of_msgpack_is_malformed(
    raised: type[Exception], monkeypatch: pytest.MonkeyPatch,
) -> None:
    # msgpack 1.2's unpackb raises ValueError subclasses only, but UnpackException
    # is msgpack's documented base: whatever the version raises stays in the codec.
    def unpackb(*args: object, **kwargs: object) -> NoReturn:
        raise raised

    monkeypatch.setattr(msgpack, "unpackb", unpackb)
    error = refusal(MsgpackCodec(Role.SERVER), msgpack.packb([EMIT, "e", None, 1]))
    assert error.code == ErrorCode.MALFORMED


def test_a_publish_id_goes_with_an_ack_id() -> None:
    from eventbus.protocol import Publish

    assert Publish("r", "e", None, 3, publish_id=9).to_wire() == [6, "r", "e", None, 3, 9]
    with pytest.raises(ValueError, match="goes with an ack id"):
        Publish("r", "e", None, publish_id=9)
