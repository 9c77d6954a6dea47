"""The two wire encodings of protocol v1 and their negotiation.

A codec turns packets into message payloads and back; it never touches a socket.
``encode`` always returns bytes (UTF-8 for JSON), so a server can encode a
broadcast once per codec and write the same bytes to every recipient.
"""

from __future__ import annotations

import abc
import json
import re
from collections.abc import Sequence
from typing import Any, ClassVar, NoReturn

import msgpack

from ..codes import ErrorCode
from ..errors import HandshakeRejected, LocalProtocolError, RemoteProtocolError
from .packets import (
    MAX_DEPTH,
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
    """

    #: Short name: ``"json"`` or ``"msgpack"``.
    name: ClassVar[str]
    #: The WebSocket subprotocol that selects this codec.
    subprotocol: ClassVar[str]
    #: Whether messages travel in binary frames (else text frames).
    binary: ClassVar[bool]

    def __init__(self, role: Role, *, max_name: int = NAME_MAX_BYTES) -> None:
        if not 0 < max_name <= NAME_MAX_BYTES:
            raise ValueError(f"max_name must be 1 to {NAME_MAX_BYTES}")
        self.role = role
        self.max_name = max_name
        self._parser = PacketParser(role, max_name=max_name, allow_bytes=self.binary)

    def encode(self, packet: Packet) -> bytes:
        """Encode a packet into the payload of one WebSocket message.

        Raises:
            LocalProtocolError: ``unencodable`` if the packet's data breaks the data
                rules, or holds binary data and this is the JSON codec.
        """
        wire = packet.to_wire()
        try:
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

    def request_ack_id(self, message: str | bytes) -> int | None:
        """The ack id a request carries, read without checking the rest of it (for
        refusing a request unprocessed, e.g. over the rate limit); ``None`` if it
        has none or cannot be read."""
        try:
            wire = self._load(message)
        except RemoteProtocolError:
            return None
        return salvage_ack_id(wire) if type(wire) is list and wire else None

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
        try:
            wire, end = self._decoder.raw_decode(message, _skip_space(message, 0))
        except json.JSONDecodeError as exc:
            _malformed(f"invalid JSON: {exc}")
        except RecursionError:
            raise RemoteProtocolError(
                f"data is nested deeper than {MAX_DEPTH} levels",
                code=ErrorCode.INVALID_PACKET,
            ) from None
        except ValueError as exc:  # e.g. an integer with too many digits
            _malformed(f"invalid JSON: {exc}")
        if _skip_space(message, end) != len(message):
            _malformed("trailing data after the JSON document")
        return wire


_JSON_SPACE = re.compile(r"[ \t\n\r]*")


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

    def __init__(self, role: Role, *, max_name: int = NAME_MAX_BYTES) -> None:
        super().__init__(role, max_name=max_name)
        self._packer = msgpack.Packer(use_bin_type=True, autoreset=True)

    def _dump(self, wire: list[Any]) -> bytes:
        packed: bytes = self._packer.pack(wire)
        return packed

    def decode(self, message: str | bytes) -> Packet:
        return self._parser.parse(self._load(message))

    def _load(self, message: str | bytes) -> Any:
        if isinstance(message, str):
            raise RemoteProtocolError(
                "text frame under the msgpack codec; send msgpack in binary frames",
                code=ErrorCode.WRONG_FRAME_TYPE,
            )
        try:
            wire = msgpack.unpackb(message, raw=False, use_list=True, strict_map_key=False)
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
        except (ValueError, msgpack.UnpackException) as exc:
            _malformed(f"invalid msgpack: {str(exc) or type(exc).__name__}")
        return wire


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
        HandshakeRejected: status 400 when subprotocols were offered but none is
            supported; the message names the supported ones.
    """
    if not offered:
        return None
    for candidate in offered:
        if candidate in _CODECS:
            return candidate
    raise HandshakeRejected(
        400,
        "none of the offered subprotocols is supported; offer one of: "
        + ", ".join(_CODECS),
    )
