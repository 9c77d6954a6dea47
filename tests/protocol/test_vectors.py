"""The codec against the language-neutral vectors in protocol/vectors/."""

from __future__ import annotations

import ast
import importlib.util
import re
from typing import Any

import pytest

from eventbus import CloseCode, ErrorCode, LocalProtocolError, RemoteProtocolError
from eventbus.protocol import PacketType, Role

from .vectorlib import (
    CODECS,
    PACKET_CLASSES,
    VECTORS_DIR,
    invalid_vectors,
    load,
    packet_from_logical,
    packet_to_logical,
    receiver_of,
    strict_packet,
    valid_vectors,
)

VALID = valid_vectors()
INVALID = invalid_vectors()
WITH_JSON = [v for v in VALID if v["json"] is not None]
HEX = re.compile(r"(?:[0-9a-f]{2})*")


def by_name(vectors: list[dict[str, Any]]) -> Any:
    return pytest.mark.parametrize("vector", vectors, ids=[v["name"] for v in vectors])


# --- the files themselves ---------------------------------------------------------------


@pytest.mark.parametrize("file_name", ["valid.json", "invalid.json"])
def test_file_header(file_name: str) -> None:
    document = load(file_name)
    assert set(document) == {"version", "description", "vectors"}
    assert document["version"] == 1
    assert isinstance(document["description"], str)
    names = [vector["name"] for vector in document["vectors"]]
    assert len(names) == len(set(names)), "vector names must be unique"
    assert all(re.fullmatch(r"[a-z0-9_]+", name) for name in names)


def test_valid_file_shape() -> None:
    assert len(VALID) >= 40
    for vector in VALID:
        keys = {"name", "sender", "packet", "json", "msgpack"}
        if vector["json"] is None:
            keys.add("json_error")
            assert vector["json_error"] == ErrorCode.UNENCODABLE
        assert set(vector) == keys, vector["name"]
        assert vector["sender"] in ("client", "server")
        assert HEX.fullmatch(vector["msgpack"]), vector["name"]
        assert vector["packet"]["type"] in PACKET_CLASSES


def test_invalid_file_shape() -> None:
    assert len(INVALID) >= 30
    for vector in INVALID:
        name = vector["name"]
        base = {"name", "receiver", "codec", "frame", "error", "ack_id"}
        assert base <= set(vector), name
        extra = set(vector) - base
        assert extra in ({"text"}, {"hex"}, {"hex", "ws_close"}), name
        assert vector["receiver"] in ("client", "server")
        assert vector["codec"] in CODECS
        assert vector["frame"] in ("text", "binary")
        assert vector["error"] in set(ErrorCode)
        assert vector["ack_id"] is None or type(vector["ack_id"]) is int
        if "hex" in vector:
            assert HEX.fullmatch(vector["hex"]), name
        # Text frames are written as text unless they are not UTF-8 (then ws_close).
        if vector["frame"] == "binary":
            assert extra == {"hex"}, name
        else:
            assert extra in ({"text"}, {"hex", "ws_close"}), name


def test_valid_vectors_cover_every_packet_type_in_its_directions() -> None:
    expected = {
        "client": {"emit", "join", "leave", "publish", "ack", "error", "resume"},
        "server": {"welcome", "event", "room_event", "ack", "error", "gap"},
    }
    assert expected["client"] | expected["server"] == {t.name.lower() for t in PacketType}
    for sender, types in expected.items():
        covered = {v["packet"]["type"] for v in VALID if v["sender"] == sender}
        assert covered == types, sender
    # Requests appear with and without an ack id.
    for kind in ("emit", "event", "join", "leave", "publish", "resume", "error"):
        with_ack = {"ack_id" in v["packet"] for v in VALID if v["packet"]["type"] == kind}
        assert with_ack == {True, False}, kind
    assert any(v["json"] is None for v in VALID)


def test_invalid_vectors_cover_every_protocol_code() -> None:
    codes = {
        ErrorCode.MALFORMED, ErrorCode.WRONG_FRAME_TYPE, ErrorCode.UNKNOWN_TYPE,
        ErrorCode.INVALID_PACKET, ErrorCode.INVALID_NAME,
    }
    assert {v["error"] for v in INVALID} == codes
    for codec in CODECS:
        for role in ("client", "server"):
            assert any(v["codec"] == codec and v["receiver"] == role for v in INVALID)
    assert any("ws_close" in v for v in INVALID)
    assert any(v["ack_id"] is not None for v in INVALID)


def test_logical_packets_convert_both_ways() -> None:
    for vector in VALID:
        packet = packet_from_logical(vector["packet"])
        assert packet_to_logical(packet) == vector["packet"], vector["name"]


# --- valid vectors ----------------------------------------------------------------------


@by_name(VALID)
def test_encode_json(vector: dict[str, Any]) -> None:
    codec = CODECS["json"](Role(vector["sender"]))
    packet = packet_from_logical(vector["packet"])
    if vector["json"] is None:
        with pytest.raises(LocalProtocolError) as info:
            codec.encode(packet)
        assert info.value.code == vector["json_error"] == ErrorCode.UNENCODABLE
    else:
        assert codec.encode(packet) == vector["json"].encode("utf-8")


@by_name(VALID)
def test_encode_msgpack(vector: dict[str, Any]) -> None:
    codec = CODECS["msgpack"](Role(vector["sender"]))
    packet = packet_from_logical(vector["packet"])
    assert codec.encode(packet).hex() == vector["msgpack"]


@by_name(WITH_JSON)
def test_decode_json(vector: dict[str, Any]) -> None:
    codec = CODECS["json"](receiver_of(vector["sender"]))
    packet = codec.decode(vector["json"])
    assert packet == packet_from_logical(vector["packet"])
    assert strict_packet(packet) == strict_packet(packet_from_logical(vector["packet"]))
    assert packet_to_logical(packet) == vector["packet"]


@by_name(VALID)
def test_decode_msgpack(vector: dict[str, Any]) -> None:
    codec = CODECS["msgpack"](receiver_of(vector["sender"]))
    packet = codec.decode(bytes.fromhex(vector["msgpack"]))
    assert packet == packet_from_logical(vector["packet"])
    assert strict_packet(packet) == strict_packet(packet_from_logical(vector["packet"]))
    assert packet_to_logical(packet) == vector["packet"]


@by_name(VALID)
def test_sender_does_not_accept_its_own_packets_unless_both_directions(
    vector: dict[str, Any],
) -> None:
    """ACK and ERROR travel both ways; every other type only one way."""
    codec = CODECS["msgpack"](Role(vector["sender"]))
    both_ways = vector["packet"]["type"] in ("ack", "error")
    message = bytes.fromhex(vector["msgpack"])
    if both_ways:
        codec.decode(message)
    else:
        with pytest.raises(RemoteProtocolError) as info:
            codec.decode(message)
        assert info.value.code == ErrorCode.UNKNOWN_TYPE


# --- invalid vectors --------------------------------------------------------------------


@by_name(INVALID)
def test_invalid(vector: dict[str, Any]) -> None:
    codec = CODECS[vector["codec"]](Role(vector["receiver"]))
    message: str | bytes
    if "text" in vector:
        message = vector["text"]
    elif vector["frame"] == "binary":
        message = bytes.fromhex(vector["hex"])
    else:
        # A text frame that is not UTF-8: the WebSocket layer must refuse it before
        # any codec sees it, closing with 1007. This harness stands in for that
        # transport and maps the failure to `malformed`.
        assert vector["ws_close"] == CloseCode.INVALID_DATA
        with pytest.raises(UnicodeDecodeError):
            bytes.fromhex(vector["hex"]).decode("utf-8")
        assert vector["error"] == ErrorCode.MALFORMED
        assert vector["ack_id"] is None
        return
    with pytest.raises(RemoteProtocolError) as info:
        codec.decode(message)
    assert (info.value.code, info.value.ack_id) == (vector["error"], vector["ack_id"])


# --- the generator ----------------------------------------------------------------------


def _load_generator() -> Any:
    spec = importlib.util.spec_from_file_location(
        "_eventbus_vectors_generate", VECTORS_DIR / "generate.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generator_reproduces_the_committed_files() -> None:
    documents = _load_generator().documents()
    assert set(documents) == {"valid.json", "invalid.json"}
    for file_name, text in documents.items():
        committed = (VECTORS_DIR / file_name).read_text(encoding="utf-8")
        assert text == committed, f"{file_name} is stale: run protocol/vectors/generate.py"


def test_generator_is_deterministic() -> None:
    assert _load_generator().documents() == _load_generator().documents()


def test_generator_is_independent_of_eventbus() -> None:
    tree = ast.parse((VECTORS_DIR / "generate.py").read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0
            assert node.module is not None
            imported.add(node.module.split(".")[0])
    assert imported <= {"__future__", "json", "sys", "pathlib", "typing", "msgpack"}
