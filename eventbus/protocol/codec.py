"""The two wire encodings of protocol v1 and their negotiation.

A codec turns packets into message payloads and back; it never touches a socket.
``encode`` always returns bytes (UTF-8 for JSON), so a server can encode a
broadcast once per codec and write the same bytes to every recipient.
"""

from __future__ import annotations

import abc
import gc
import json
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar, NoReturn

import msgpack

from ..codes import ErrorCode
from ..errors import LocalProtocolError, RemoteProtocolError, UnsupportedSubprotocol
from .packets import (
    _ACK_INDEX,
    ACK_ID_MAX,
    MAX_DEPTH,
    MAX_ELEMENTS,
    NAME_MAX_BYTES,
    DataError,
    Packet,
    PacketParser,
    Role,
    check_data,
    salvage_ack_id,
)

__all__ = [
    "DEFAULT_SUBPROTOCOL",
    "JSON_SUBPROTOCOL",
    "MSGPACK_SUBPROTOCOL",
    "Codec",
    "JsonCodec",
    "MsgpackCodec",
    "codec_for_subprotocol",
    "select_subprotocol",
]

JSON_SUBPROTOCOL = "eventbus.v1.json"
MSGPACK_SUBPROTOCOL = "eventbus.v1.msgpack"
#: The codec of a client that offers no subprotocol at all.
DEFAULT_SUBPROTOCOL = JSON_SUBPROTOCOL


class Codec(abc.ABC):
    """Base of the codecs: encoding, decoding and the rules they share.

    Args:
        role: The side this codec works for; it decodes what the *other* side sends.
        max_name: The longest event or room name accepted, in UTF-8 bytes.
        max_elements: The most data values a decoded message may hold. Decoding
            stops early (at C speed, before Python walks the data) when a message
            is sure to hold more, so that one message's cost has a ceiling.
    """

    #: Short name: ``"json"`` or ``"msgpack"``.
    name: ClassVar[str]
    #: The WebSocket subprotocol that selects this codec.
    subprotocol: ClassVar[str]
    #: Whether messages travel in binary frames (else text frames).
    binary: ClassVar[bool]

    def __init__(
        self, role: Role, *, max_name: int = NAME_MAX_BYTES, max_elements: int = MAX_ELEMENTS,
    ) -> None:
        if not 0 < max_name <= NAME_MAX_BYTES:
            raise ValueError(f"max_name must be 1 to {NAME_MAX_BYTES}")
        if max_elements < 1:
            raise ValueError("max_elements must be positive")
        self.role = role
        self.max_name = max_name
        self.max_elements = max_elements
        self._parser = PacketParser(
            role, max_name=max_name, allow_bytes=self.binary, max_elements=max_elements)

    @property
    def elements(self) -> int:
        """How many data values the last decoded message held (its cost to check)."""
        return self._parser.elements

    def encode(self, packet: Packet, *, checked: bool = False) -> bytes:
        """Encode a packet into the payload of one WebSocket message.

        Args:
            packet: The packet.
            checked: The caller has already checked the packet's data against the
                data rules (:func:`check_data`, binary allowed), as a server does
                once for a message it delivers to many: the check is not repeated.
                What JSON cannot carry (binary data) still fails.

        Raises:
            LocalProtocolError: ``unencodable`` if the packet's data breaks the data
                rules, or holds binary data and this is the JSON codec.
        """
        wire = packet.to_wire()
        try:
            if not checked:
                # The packet array is one level above the data it carries.
                check_data(wire, allow_bytes=self.binary, depth=MAX_DEPTH + 1)
            return self._dump(wire)
        except (DataError, TypeError, ValueError, OverflowError) as exc:
            raise LocalProtocolError(
                f"cannot encode {type(packet).__name__} as {self.name}: {exc}"
            ) from None

    @abc.abstractmethod
    def decode(self, message: str | bytes) -> Packet:
        """Decode one WebSocket message: ``str`` for a text frame, ``bytes`` for binary.

        Raises:
            RemoteProtocolError: with a code from the catalogue; nothing else.
        """

    def peek(self, message: str | bytes) -> tuple[int | None, int | None]:
        """The packet type and ack id of a message, read without decoding its data,
        for refusing a request unprocessed (over the rate limit, or with the inbox
        full) at a cost that does not grow with what the data holds.

        Returns:
            ``(type, ack_id)``, either ``None`` when it cannot be read. A small
            message is decoded whole, so both are exact; for a long one they are
            read from its ends: best effort, as the spec allows for refusals.
        """
        if len(message) <= _PEEK_DECODE:
            try:
                wire = self._load(message)
            except RemoteProtocolError:
                return None, None
            if type(wire) is not list or not wire or type(wire[0]) is not int:
                return None, None
            return wire[0], salvage_ack_id(wire)
        return self._peek_long(message)

    @abc.abstractmethod
    def _peek_long(self, message: str | bytes) -> tuple[int | None, int | None]:
        """:meth:`peek` for a message too long to decode for it."""

    def _too_many(self, message: str | bytes) -> RemoteProtocolError:
        """The error for a message refused before it was decoded for holding too
        many values, answering its request if the ack id can be read cheaply."""
        self._parser.elements = self.max_elements + 1
        error = RemoteProtocolError(
            f"data holds more than {self.max_elements} values (max_elements)",
            code=ErrorCode.INVALID_PACKET)
        error.ack_id = self._peek_long(message)[1]
        return error

    @abc.abstractmethod
    def _load(self, message: str | bytes) -> Any:
        """Parse a message into plain values, without the packet rules.

        Raises:
            RemoteProtocolError: the message is not one JSON/msgpack document.
        """

    @abc.abstractmethod
    def _dump(self, wire: list[Any]) -> bytes:
        """Serialize a packet array that already passed the data rules."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.role}, max_name={self.max_name})"


#: Messages up to this length are decoded whole to peek at them (cheap at this size).
_PEEK_DECODE = 1024
#: Above this length, decoding runs with the cyclic garbage collector paused: a
#: long message of small containers otherwise triggers collections that cost
#: several times the decoding itself, and none of what decoding creates is garbage.
_GC_PAUSE_LENGTH = 16_384


@contextmanager
def _gc_paused(length: int) -> Iterator[None]:
    if length < _GC_PAUSE_LENGTH or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()




def _malformed(message: str) -> NoReturn:
    raise RemoteProtocolError(message, code=ErrorCode.MALFORMED)


def _reject_constant(name: str) -> NoReturn:
    _malformed(f"{name} is not a JSON number the protocol allows")


class JsonCodec(Codec):
    """JSON in text frames (``eventbus.v1.json``); binary data is not allowed."""

    name = "json"
    subprotocol = JSON_SUBPROTOCOL
    binary = False

    _encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    _decoder = json.JSONDecoder(parse_constant=_reject_constant)

    def _dump(self, wire: list[Any]) -> bytes:
        # strict UTF-8 encoding also refuses lone surrogates from Python strings.
        return self._encoder.encode(wire).encode("utf-8")

    def decode(self, message: str | bytes) -> Packet:
        self._parser.elements = 0  # a message that fails before parsing held none
        wire = self._load(message)
        # A \u escape is the only way a lone surrogate can reach a decoded string.
        assert isinstance(message, str)
        return self._parser.parse(wire, check_strings="\\u" in message)

    def _load(self, message: str | bytes) -> Any:
        if type(message) is not str:
            raise RemoteProtocolError(
                "binary frame under the JSON codec; send JSON in text frames",
                code=ErrorCode.WRONG_FRAME_TYPE,
            )
        if len(message) > self.max_elements and _json_values_at_most(message) > (
                self.max_elements + _PACKET_VALUES):
            # Refused before decoding: decoding is what costs (counted generously, see
            # _json_values_at_most). The packet's own fields are allowed for.
            raise self._too_many(message)
        try:
            with _gc_paused(len(message)):
                wire, end = self._decoder.raw_decode(message, _skip_space(message, 0))
        except json.JSONDecodeError as exc:
            # Our own words, not the decoder's; the position helps find the fault.
            _malformed(f"invalid JSON at character {exc.pos}")
        except RecursionError:
            raise RemoteProtocolError(
                f"data is nested deeper than {MAX_DEPTH} levels",
                code=ErrorCode.INVALID_PACKET,
            ) from None
        except ValueError:  # an integer of more digits than Python converts
            _malformed("invalid JSON: a number has too many digits")
        if _skip_space(message, end) != len(message):
            _malformed("trailing data after the JSON document")
        return wire

    def _peek_long(self, message: str | bytes) -> tuple[int | None, int | None]:
        if type(message) is not str:
            return None, None
        head = _JSON_HEAD.match(message)
        if head is None:
            return None, None
        kind = int(head.group(1))
        tail = _JSON_TAIL.search(message, len(message) - 32)
        if tail is None or kind not in _ACK_INDEX:
            return kind, None
        ack_id = int(tail.group(1))
        return kind, ack_id if 0 < ack_id <= ACK_ID_MAX else None


_JSON_SPACE = re.compile(r"[ \t\n\r]*")
_JSON_HEAD = re.compile(r"[ \t\n\r]*\[[ \t\n\r]*([0-9]{1,2})[ \t\n\r]*,")
_JSON_TAIL = re.compile(r",[ \t\n\r]*([0-9]{1,10})[ \t\n\r]*\][ \t\n\r]*\Z")
#: The most values a packet holds besides its data (type, names, ack id: all
#: counted by _json_values_at_most, which sees the whole packet).
_PACKET_VALUES = 8


def _json_values_at_most(text: str) -> int:
    """An upper bound on the values a JSON document holds, counted at C speed.

    Every value but the first in its container follows a comma; the first follows
    the bracket that opens a non-empty container; and there is the document itself.
    Commas and brackets inside strings count too, so the bound is generous.
    """
    containers = text.count("[") + text.count("{")
    empty = text.count("[]") + text.count("{}")
    return text.count(",") + containers - empty + 1


def _skip_space(text: str, index: int) -> int:
    # A regular expression skips at C speed: a megabyte of spaces must not cost
    # the event loop a Python loop per character.
    match = _JSON_SPACE.match(text, index)
    return match.end() if match else index


class MsgpackCodec(Codec):
    """msgpack in binary frames (``eventbus.v1.msgpack``); binary data travels as-is."""

    name = "msgpack"
    subprotocol = MSGPACK_SUBPROTOCOL
    binary = True

    def __init__(
        self, role: Role, *, max_name: int = NAME_MAX_BYTES, max_elements: int = MAX_ELEMENTS,
    ) -> None:
        super().__init__(role, max_name=max_name, max_elements=max_elements)
        self._packer = msgpack.Packer(use_bin_type=True, autoreset=True)
        self._counted = 0

    def _dump(self, wire: list[Any]) -> bytes:
        packed: bytes = self._packer.pack(wire)
        return packed

    def decode(self, message: str | bytes) -> Packet:
        self._parser.elements = 0  # a message that fails before parsing held none
        return self._parser.parse(self._load(message))

    def _count(self, container: Any) -> Any:
        # Called by the unpacker as each array or map is complete: a message sure to
        # hold too many values stops decoding here, before it is all built.
        self._counted += len(container) + 1
        if self._counted > self.max_elements + _PACKET_VALUES:
            raise _TooMany
        return container

    def _load(self, message: str | bytes) -> Any:
        if isinstance(message, str):
            raise RemoteProtocolError(
                "text frame under the msgpack codec; send msgpack in binary frames",
                code=ErrorCode.WRONG_FRAME_TYPE,
            )
        try:
            if len(message) <= self.max_elements:
                # Every value takes a byte at least: a short message cannot hold too many.
                wire = msgpack.unpackb(message, raw=False, use_list=True, strict_map_key=False)
            else:
                self._counted = 0
                limit = self.max_elements + _PACKET_VALUES
                with _gc_paused(len(message)):
                    wire = msgpack.unpackb(
                        message, raw=False, use_list=True, strict_map_key=False,
                        list_hook=self._count, object_hook=self._count,
                        max_array_len=limit, max_map_len=limit,
                    )
        except _TooMany:
            raise self._too_many(message) from None
        except msgpack.StackError:
            raise RemoteProtocolError(
                f"data is nested deeper than {MAX_DEPTH} levels",
                code=ErrorCode.INVALID_PACKET,
            ) from None
        except msgpack.ExtraData:
            _malformed("trailing data after the msgpack document")
        except TypeError:
            # An array or map used as a map key is unhashable in Python.
            raise RemoteProtocolError(
                "data: map keys must be strings", code=ErrorCode.INVALID_PACKET
            ) from None
        except UnicodeDecodeError:
            _malformed("invalid msgpack: a string is not valid UTF-8")
        except ValueError as exc:
            if "exceeds max_" in str(exc) and len(message) > self.max_elements:
                # Our length limits (below max_elements bytes, unpackb's own limits
                # catch a length longer than the message: a truncated document).
                raise self._too_many(message) from None
            _malformed("invalid msgpack: truncated, or not a msgpack document")
        except msgpack.UnpackException:
            _malformed("invalid msgpack: not a msgpack document")
        return wire

    def _peek_long(self, message: str | bytes) -> tuple[int | None, int | None]:
        if isinstance(message, str):
            return None, None
        unpacker = msgpack.Unpacker(max_buffer_size=len(message))
        unpacker.feed(message)
        try:
            length = unpacker.read_array_header()
            # Packet types are positive fixints: one byte after the array's header
            # (fixarray, array 16 or array 32), read without decoding anything.
            kind = message[{0xDC: 3, 0xDD: 5}.get(message[0], 1)]
            if kind >= 0x80:
                return None, None
            unpacker.skip()
            index = _ACK_INDEX.get(kind)
            if index is None or length != index + 1:
                return kind, None
            for _ in range(index - 1):
                unpacker.skip()  # skipped at C speed, building nothing
            ack_id = unpacker.unpack()
        except Exception:  # anything unreadable: the refusal goes without an id
            return None, None
        valid = type(ack_id) is int and 0 < ack_id <= ACK_ID_MAX
        return kind, ack_id if valid else None


class _TooMany(Exception):
    """Raised through the unpacker to stop decoding a message of too many values."""


_CODECS: dict[str, type[Codec]] = {
    JSON_SUBPROTOCOL: JsonCodec,
    MSGPACK_SUBPROTOCOL: MsgpackCodec,
}


def codec_for_subprotocol(subprotocol: str | None) -> type[Codec]:
    """The codec class for a negotiated subprotocol (``None``: the default, JSON)."""
    return _CODECS[subprotocol or DEFAULT_SUBPROTOCOL]


def select_subprotocol(offered: Sequence[str]) -> str | None:
    """Pick the subprotocol to answer a client's offer with.

    Returns the first offered subprotocol this version supports (the client lists
    its preference first), or ``None`` when the client offered none, which selects
    JSON without a ``Sec-WebSocket-Protocol`` header in the answer.

    Raises:
        UnsupportedSubprotocol: subprotocols were offered but none is supported;
            the message names the supported ones (a server answers HTTP 400).
    """
    if not offered:
        return None
    for candidate in offered:
        if candidate in _CODECS:
            return candidate
    raise UnsupportedSubprotocol(
        "none of the offered subprotocols is supported; offer one of: "
        + ", ".join(_CODECS),
    )
