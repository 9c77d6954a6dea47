"""protocol/vectors/invalid.json against a live server, plus the 4000 rule.

Every vector whose receiver is the server is sent as the frame type it names, on
a connection of its own: the answer must be the ERROR the vector gives (code and
ack id), the connection must stay open (an echo still works afterwards), and
another client must keep getting answers. Text frames with invalid UTF-8 go over
raw TCP (trio-websocket will not send them) and must close the connection with
the vector's ``ws_close`` code.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from eventbus.protocol import Emit, ErrorReply

from ..protocol.vectorlib import invalid_vectors
from .conftest import open_bus, raw_client, serving
from .test_handshake import OP_TEXT, close_code, echo, raw_websocket

SERVER_VECTORS = [v for v in invalid_vectors() if v["receiver"] == "server"]
CODEC_VECTORS = [v for v in SERVER_VECTORS if "ws_close" not in v]
CLOSE_VECTORS = [v for v in SERVER_VECTORS if "ws_close" in v]
BAD = "[]"  # unknown_type: a protocol error that counts toward 4000


def _name(vector: dict[str, Any]) -> str:
    return str(vector["name"])


def _message(vector: dict[str, Any]) -> str | bytes:
    """The vector as trio-websocket sends it: str is a text frame, bytes binary."""
    payload: bytes = bytes.fromhex(vector["hex"]) if "hex" in vector else vector["text"].encode()
    return payload.decode() if vector["frame"] == "text" else payload


def test_the_vector_file_has_server_vectors_of_every_kind() -> None:
    assert len(CODEC_VECTORS) > 50
    assert CLOSE_VECTORS
    assert {v["codec"] for v in CODEC_VECTORS} == {"json", "msgpack"}
    assert {v["frame"] for v in CODEC_VECTORS} == {"text", "binary"}


@pytest.mark.parametrize("vector", CODEC_VECTORS, ids=_name)
async def test_invalid_vector_gets_its_error_and_the_connection_stays_open(
    vector: dict[str, Any],
) -> None:
    with trio.fail_after(10):
        async with serving(open_bus()) as port, raw_client(port) as bystander, \
                raw_client(port, vector["codec"]) as client:
            await client.send_raw(_message(vector))
            answer = await client.recv()
            assert isinstance(answer, ErrorReply), answer
            assert (answer.ack_id, answer.code) == (vector["ack_id"], vector["error"])
            assert isinstance(answer.message, str)
            assert "Traceback" not in answer.message
            # Nothing else came first: the next packet is the echo's answer.
            await echo(client, 1)
            await echo(bystander, 1)


@pytest.mark.parametrize("vector", CLOSE_VECTORS, ids=_name)
async def test_invalid_utf8_text_frame_closes_with_its_code(vector: dict[str, Any]) -> None:
    with trio.fail_after(10):
        async with serving(open_bus()) as port, raw_client(port) as bystander:
            async with raw_websocket(port) as ws:
                await ws.read_welcome()
                await ws.send_frame(OP_TEXT, bytes.fromhex(vector["hex"]))
                code, _ = await ws.read_close()
                assert code == vector["ws_close"]
                await ws.expect_eof()
            await echo(bystander, 1)


async def test_all_server_vectors_on_one_connection_each_followed_by_a_valid_packet() -> None:
    """The same vectors back to back on one connection per codec: a valid packet
    after each resets the error count, so none of this reaches 4000."""
    with trio.fail_after(10):
        async with serving(open_bus()) as port, raw_client(port) as json_client, \
                raw_client(port, "msgpack") as msgpack_client:
            clients = {"json": json_client, "msgpack": msgpack_client}
            for n, vector in enumerate(CODEC_VECTORS, start=1):
                client = clients[vector["codec"]]
                await client.send_raw(_message(vector))
                answer = await client.recv()
                assert isinstance(answer, ErrorReply), (vector["name"], answer)
                assert (answer.ack_id, answer.code) == (vector["ack_id"], vector["error"]), \
                    vector["name"]
                await echo(client, n, n)


# --- too many errors in a row -----------------------------------------------------------


@pytest.mark.parametrize("max_errors", [None, 3])
async def test_max_errors_in_a_row_closes_with_4000(max_errors: int | None) -> None:
    settings = {} if max_errors is None else {"max_errors": max_errors}
    limit = max_errors or 10  # the reference default
    with trio.fail_after(10):
        async with serving(open_bus(**settings)) as port, raw_client(port) as bystander, \
                raw_client(port) as client:
            for _ in range(limit):
                await client.send_raw(BAD)
            for _ in range(limit):
                answer = await client.recv()
                assert isinstance(answer, ErrorReply)
                assert (answer.ack_id, answer.code) == (None, "unknown_type")
            assert await close_code(client) == 4000
            await echo(bystander, 1)


async def test_a_valid_packet_resets_the_error_count() -> None:
    with trio.fail_after(10):
        async with serving(open_bus(max_errors=3)) as port, raw_client(port) as client:
            for round_ in range(4):
                for _ in range(2):
                    await client.send_raw(BAD)
                    answer = await client.recv()
                    assert isinstance(answer, ErrorReply)
                    assert answer.code == "unknown_type"
                await echo(client, round_ + 1)
            # An answer to nothing (an ACK with an unknown id) is valid and resets too.
            for _ in range(2):
                await client.send_raw(BAD)
                await client.recv()
            await client.send_raw("[7,99,null]")
            await client.recv_nothing(0.05)
            for _ in range(2):
                await client.send_raw(BAD)
                await client.recv()
            await echo(client, 10)
            # Without a valid packet in between, the third error in a row closes.
            for _ in range(3):
                await client.send_raw(BAD)
            for _ in range(3):
                await client.recv()
            assert await close_code(client) == 4000


async def test_errors_that_are_not_protocol_errors_do_not_count() -> None:
    """unknown_event, rate_limited and the like answer valid packets: no 4000."""
    with trio.fail_after(10):
        async with serving(open_bus(max_errors=2)) as port, raw_client(port) as client:
            for n in range(1, 6):
                await client.send(Emit("nosuchevent", None, n))
                answer = await client.recv()
                assert isinstance(answer, ErrorReply)
                assert (answer.ack_id, answer.code) == (n, "unknown_event")
            await echo(client, 10)
