"""``Codec.peek`` (the packet type and ack id of a message read without decoding its
data, for refusals) and the ``max_elements`` ceiling on what one message may hold.

A short message is decoded whole to peek at it; a long one (over 1024 characters or
bytes) is read from its ends only, best effort, and whatever cannot be read there is
``None``. Bytes in, values out: no I/O.
"""

from __future__ import annotations

import enum
from typing import Any

import msgpack
import pytest

from eventbus import ErrorCode
from eventbus.errors import RemoteProtocolError
from eventbus.protocol import JsonCodec, MsgpackCodec, Role, check_data

PAD = "x" * 2000  # makes a message long enough to be peeked at from its ends
JSON = JsonCodec(Role.SERVER)
MSGPACK = MsgpackCodec(Role.SERVER)


@pytest.mark.parametrize("codec", [JsonCodec, MsgpackCodec])
def test_max_elements_must_be_positive(codec: type[JsonCodec | MsgpackCodec]) -> None:
    with pytest.raises(ValueError, match="max_elements must be positive"):
        codec(Role.SERVER, max_elements=0)


@pytest.mark.parametrize(
    ("message", "peeked"),
    [
        ('[1, "e", null, 5]', (1, 5)),
        ('[1, "e", null]', (1, None)),
        ('{"type": 1}', (None, None)),
        ("[]", (None, None)),
        ('["1", "e", null, 5]', (None, None)),
        ("[1, ", (None, None)),
        # Long: read from the ends.
        (f'[1, "e", "{PAD}", 7]', (1, 7)),
        (f'[1, "e", "{PAD}"]', (1, None)),
        (f'[1, "e", "{PAD}", 0]', (1, None)),  # 0 is no ack id
        (f'[3, "room", "e", "{PAD}", "e1", 7]', (3, None)),  # a type without an ack id
        (f'{{"type": 1, "pad": "{PAD}"}}', (None, None)),
        (PAD.encode(), (None, None)),  # binary, under JSON
    ],
)
def test_json_peek(message: str | bytes, peeked: tuple[int | None, int | None]) -> None:
    assert JSON.peek(message) == peeked


@pytest.mark.parametrize(
    ("message", "peeked"),
    [
        (msgpack.packb([1, "e", None, 5]), (1, 5)),
        (b"\xc1", (None, None)),
        # Long: read from the ends.
        (msgpack.packb([1, "e", PAD, 9]), (1, 9)),
        (msgpack.packb([1, "e", PAD]), (1, None)),
        (msgpack.packb([1, "e", PAD, 9, 9]), (1, None)),  # the wrong length for EMIT
        (msgpack.packb(["1", PAD]), (None, None)),  # the type is not a small integer
        (b"\x94\x01" + b"\xc1" * 2000, (None, None)),  # unreadable after the type
        (b"\xc1" * 2000, (None, None)),  # not even an array
        (PAD, (None, None)),  # text, under msgpack
    ],
)
def test_msgpack_peek(message: str | bytes, peeked: tuple[int | None, int | None]) -> None:
    assert MSGPACK.peek(message) == peeked


def refusal(codec: JsonCodec | MsgpackCodec, message: str | bytes) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as caught:
        codec.decode(message)
    return caught.value


@pytest.mark.parametrize(
    "data",
    [
        list(range(50)),  # one array longer than the limit: refused from its header
        [[n, n] for n in range(10)],  # short arrays adding up: refused as they complete
    ],
)
def test_msgpack_holding_too_many_values_stops_decoding_and_keeps_the_ack_id(
    data: list[Any],
) -> None:
    codec = MsgpackCodec(Role.SERVER, max_elements=10)
    error = refusal(codec, msgpack.packb([1, "e", data, 3]))
    assert error.code == ErrorCode.INVALID_PACKET
    assert "more than 10 values (max_elements)" in str(error)
    assert error.ack_id == 3
    assert codec.elements == 11


def test_json_holding_too_many_values_for_the_parser_is_an_invalid_packet() -> None:
    # Few enough commas to pass the cheap count before decoding; the parser counts.
    codec = JsonCodec(Role.SERVER, max_elements=5)
    error = refusal(codec, '[1, "e", [1, 2, 3, 4, 5, 6], 1]')
    assert error.code == ErrorCode.INVALID_PACKET
    assert "more than 5 values (max_elements)" in str(error)
    assert error.ack_id == 1


@pytest.mark.parametrize("value", [list(range(10)), {"a": [1, 2, 3], "b": 1}])
def test_check_data_stops_at_max_elements(value: Any) -> None:
    with pytest.raises(ValueError, match="more than 2 values"):
        check_data(value, max_elements=2)


def test_int_subclasses_count_as_integers() -> None:
    class Level(enum.IntEnum):
        HIGH = 3

    assert check_data(Level.HIGH) == 1
    assert check_data([Level.HIGH, 7]) == 3
    with pytest.raises(ValueError, match="outside"):
        check_data(type("Big", (int,), {})(2**64))
