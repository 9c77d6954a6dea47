"""Hypothesis strategies shared by the tests: raw values for fuzzing the codecs, and
valid packets of protocol v1."""

from __future__ import annotations

from typing import Any

import msgpack
from hypothesis import strategies as st

from eventbus.codes import ErrorCode
from eventbus.protocol import (
    ACK_ID_MAX,
    MAX_DEPTH,
    NAME_MAX_BYTES,
    SEQ_MAX,
    Ack,
    Emit,
    ErrorReply,
    Event,
    Gap,
    Join,
    Leave,
    Packet,
    PacketType,
    Position,
    Publish,
    Resume,
    RoomEvent,
    Welcome,
    WelcomeOptions,
)

INT_MIN = -(2**63)
INT_MAX = 2**64 - 1

_EDGES = [
    0, 1, -1, ACK_ID_MAX, ACK_ID_MAX + 1, SEQ_MAX, SEQ_MAX + 1, 2**63 - 1, INT_MIN, INT_MIN - 1,
    INT_MAX, INT_MAX + 1, 10**30, -(10**30),
]
#: Integers on the edges of the protocol's ranges, and just past them.
EDGE_INTEGERS = st.sampled_from(_EDGES)
#: The same, limited to what msgpack can carry (and the data rules allow).
DATA_EDGE_INTEGERS = st.sampled_from([n for n in _EDGES if INT_MIN <= n <= INT_MAX])

# --- raw values for fuzzing -------------------------------------------------------------


def json_values(*, max_leaves: int = 25) -> st.SearchStrategy[Any]:
    """Anything ``json.dumps`` accepts: huge integers, NaN and infinities (written as
    NaN/Infinity), any text including lone surrogates, nested arrays and objects."""
    scalars = st.one_of(
        st.none(), st.booleans(), st.integers(), EDGE_INTEGERS, st.floats(),
        st.text(st.characters(exclude_categories=())),
    )
    return st.recursive(
        scalars,
        lambda children: st.lists(children, max_size=5)
        | st.dictionaries(st.text(max_size=10), children, max_size=5),
        max_leaves=max_leaves,
    )


def msgpack_values(*, max_leaves: int = 25) -> st.SearchStrategy[Any]:
    """Anything ``msgpack.packb`` accepts: every integer it can carry, NaN and
    infinities, text, binary, ext types, maps with str, int or binary keys."""
    scalars = st.one_of(
        st.none(), st.booleans(), st.integers(INT_MIN, INT_MAX), DATA_EDGE_INTEGERS,
        st.floats(), st.text(), st.binary(max_size=20),
        st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=8)),
    )
    keys = st.one_of(st.text(max_size=10), st.integers(-5, 5), st.binary(max_size=4))
    return st.recursive(
        scalars,
        lambda children: st.lists(children, max_size=5)
        | st.dictionaries(keys, children, max_size=5),
        max_leaves=max_leaves,
    )


def wire_like(
    values: st.SearchStrategy[Any], *, msgpack_ints: bool = False
) -> st.SearchStrategy[list[Any]]:
    """Arrays that start like a packet (a type number or something near it) and go on
    with values close to the fields a packet holds, so fuzzing reaches the parsers.
    With ``msgpack_ints``, integers stay within what msgpack can carry."""
    edges = DATA_EDGE_INTEGERS if msgpack_ints else EDGE_INTEGERS
    fields = st.one_of(
        values, names(reserved_ok=True), tokens(), epochs(), ack_ids(), edges,
        st.integers(-3, 3), st.none(), error_codes(),
        st.dictionaries(names(reserved_ok=True), st.tuples(epochs(), st.integers(-1, 5))
                        .map(list), max_size=3),
        welcome_options().map(lambda options: options.to_wire()),
    )
    kinds = st.one_of(st.sampled_from(list(PacketType)).map(int), st.integers(-2, 12))
    return st.builds(lambda kind, rest: [kind, *rest], kinds, st.lists(fields, max_size=6))


# --- valid fields -----------------------------------------------------------------------

_NAME_CHARS = st.characters(exclude_categories=("Cs", "Cc"))


def names(*, reserved_ok: bool, max_bytes: int = NAME_MAX_BYTES) -> st.SearchStrategy[str]:
    """Event or room names: 1 to ``max_bytes`` UTF-8 bytes, no control characters,
    and (unless ``reserved_ok``) not starting with ``$``."""
    short = st.text(_NAME_CHARS, min_size=1, max_size=24)
    longest = st.sampled_from(["n" * max_bytes, "房" * (max_bytes // 3), "🎉" * (max_bytes // 4)])
    reserved = st.sampled_from(["$", "$presence", "$房间"]) if reserved_ok else st.nothing()
    return st.one_of(short, longest, reserved).filter(
        lambda name: len(name.encode("utf-8")) <= max_bytes
        and (reserved_ok or not name.startswith("$"))
    )


def tokens() -> st.SearchStrategy[str]:
    """Session ids and resume tokens."""
    return st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True)


def epochs() -> st.SearchStrategy[str]:
    return st.from_regex(r"[\x21-\x7e]{1,64}", fullmatch=True)


def ack_ids() -> st.SearchStrategy[int]:
    return st.integers(1, ACK_ID_MAX)


def optional_ack_ids() -> st.SearchStrategy[int | None]:
    return st.none() | ack_ids()


def error_codes() -> st.SearchStrategy[str]:
    """Known codes (as ErrorCode members) and well-formed codes from the future."""
    return st.sampled_from(list(ErrorCode)) | st.from_regex(r"[a-z][a-z0-9_]{0,63}",
                                                            fullmatch=True)


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    return 0


def data(*, binary: bool, max_leaves: int = 15) -> st.SearchStrategy[Any]:
    """Event data that follows the data rules; with ``binary``, it may hold bytes."""
    scalars = st.one_of(
        st.none(), st.booleans(), st.integers(INT_MIN, INT_MAX),
        DATA_EDGE_INTEGERS,
        st.floats(allow_nan=False, allow_infinity=False), st.text(),
        st.binary(max_size=20) if binary else st.nothing(),
    )
    return st.recursive(
        scalars,
        lambda children: st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=8), children, max_size=4),
        max_leaves=max_leaves,
    ).filter(lambda value: _depth(value) <= MAX_DEPTH)


def welcome_options() -> st.SearchStrategy[WelcomeOptions]:
    value = st.integers(0, 10**6) | st.integers(0, INT_MAX)
    return st.builds(
        WelcomeOptions, ping_interval=value, ping_timeout=value, max_frame=value,
        max_name=value, max_rooms=value, max_pending=value, rate=value, burst=value,
    )


# --- valid packets ----------------------------------------------------------------------


def client_packets(*, binary: bool) -> st.SearchStrategy[Packet]:
    """Packets a client may send (reserved names excluded)."""
    name = names(reserved_ok=False)
    payload = data(binary=binary)
    positions = st.dictionaries(
        name, st.builds(Position, epochs(), st.integers(0, SEQ_MAX)), max_size=4
    )
    return st.one_of(
        st.builds(Emit, name, payload, optional_ack_ids()),
        st.builds(Join, name, optional_ack_ids()),
        st.builds(Leave, name, optional_ack_ids()),
        st.builds(Publish, name, name, payload, optional_ack_ids()),
        st.builds(Ack, ack_ids(), payload),
        st.builds(ErrorReply, optional_ack_ids(), error_codes(), st.text()),
        st.builds(Resume, tokens(), tokens(), positions, optional_ack_ids()),
    )


def server_packets(*, binary: bool) -> st.SearchStrategy[Packet]:
    """Packets a server may send (reserved names included)."""
    name = names(reserved_ok=True)
    payload = data(binary=binary)
    return st.one_of(
        st.builds(Welcome, tokens(), tokens(), welcome_options()),
        st.builds(Event, name, payload, optional_ack_ids()),
        st.builds(RoomEvent, name, name, payload, epochs(), st.integers(1, SEQ_MAX)),
        st.builds(Ack, ack_ids(), payload),
        st.builds(ErrorReply, optional_ack_ids(), error_codes(), st.text()),
        st.builds(Gap, st.none() | name, st.integers(1, SEQ_MAX)),
    )
