"""Fixes from the second review of the server: hooks, targets, numbering, heartbeats,
connection capacity and the connection log. Over real sockets on 127.0.0.1; timed
behaviour in virtual time (``autojump_clock``) where the test can run on it.
"""

from __future__ import annotations

import errno
import logging
from typing import Any

import pytest
import trio
import trio.testing

from eventbus import Connection, Disconnect, ErrorCode, EventBus, HandshakeRequest
from eventbus.errors import LocalProtocolError
from eventbus.protocol import Ack, Emit, ErrorReply, Gap, Join, RoomEvent

from .conftest import open_bus, raw_client, serving
from .test_handshake import (
    OP_CLOSE,
    OP_PING,
    OP_TEXT,
    http_get,
    raw_websocket,
    refused_upgrade,
)


async def join(client: Any, room: str, ack_id: int = 1) -> Any:
    await client.send(Join(room, ack_id))
    answer = await client.recv()
    assert isinstance(answer, Ack)
    return answer.data


# --- hooks ------------------------------------------------------------------------------


async def test_plain_function_hooks_work_like_async_ones() -> None:
    bus = open_bus()
    seen: list[str] = []

    @bus.authenticate
    def authenticate(request: HandshakeRequest) -> dict[str, str]:
        return {"user": request.query.get("user", "?")}

    @bus.on_connect
    def connected(sock: Connection) -> None:
        seen.append(f"connect {sock.state['user']}")

    @bus.on_disconnect
    def disconnected(sock: Connection, disconnect: Disconnect) -> None:
        seen.append(f"disconnect by server: {disconnect.by_server}")

    with trio.fail_after(10):
        async with serving(bus) as port:
            async with raw_client(port, path="/?user=ada") as client:
                await client.send(Emit("echo", "hi", 1))
                assert await client.recv() == Ack(1, "hi")
            while len(seen) < 2:  # noqa: ASYNC110 - polls server state, tests only
                await trio.sleep(0.01)
    assert seen == ["connect ada", "disconnect by server: False"]


async def test_the_socket_is_closed_before_a_slow_on_disconnect_runs() -> None:
    bus = open_bus()
    release = trio.Event()

    @bus.on_disconnect
    async def slow(sock: Connection, disconnect: Disconnect) -> None:
        await release.wait()

    with trio.fail_after(10):
        async with serving(bus) as port, raw_websocket(port) as ws:
            await ws.read_welcome()
            sock = next(iter(bus.connections.values()))
            sock.close(1000, "bye")
            assert await ws.read_close() == (1000, "bye")
            await ws.send_frame(OP_CLOSE, (1000).to_bytes(2, "big"))
            await ws.expect_eof()  # while the hook is still waiting
            release.set()


# --- what a handler may return ------------------------------------------------------------


async def test_a_handler_may_answer_with_a_member_of_our_own_enums() -> None:
    bus = open_bus()

    @bus.on("code")
    async def code(sock: Connection, data: Any) -> Any:
        return {"code": ErrorCode.FORBIDDEN, "list": [ErrorCode.MALFORMED]}

    with trio.fail_after(10):
        for codec in ("json", "msgpack"):
            async with serving(bus) as port, raw_client(port, codec) as client:
                await client.send(Emit("code", None, 1))
                assert await client.recv() == Ack(1, {"code": "forbidden", "list": ["malformed"]})


# --- room numbering -----------------------------------------------------------------------


async def test_an_emit_that_cannot_be_encoded_leaves_no_hole_in_the_numbering() -> None:
    bus = open_bus()
    with trio.fail_after(10):
        async with serving(bus) as port, raw_client(port) as member:
            _epoch, seq = await join(member, "r")
            with pytest.raises(LocalProtocolError):
                bus.emit("bad", {1: "not a string key"}, to="r")
            assert bus.emit("good", 1, to="r") == 1
            packet = await member.recv()
            assert isinstance(packet, RoomEvent)
            assert packet.seq == seq + 1


async def test_a_json_member_is_told_which_room_lost_a_binary_message() -> None:
    bus = open_bus()
    with trio.fail_after(10):
        async with serving(bus) as port, raw_client(port) as text, \
                raw_client(port, "msgpack") as binary:
            await join(text, "cams")
            await join(binary, "cams")
            assert bus.emit("frame", b"\x89PNG", to="cams") == 2
            error = await text.recv()
            assert isinstance(error, ErrorReply)
            assert (error.ack_id, error.code) == (None, "unencodable")
            # For program logic: a GAP for the room (the ERROR's text is for people).
            assert await text.recv() == Gap("cams", 1)
            packet = await binary.recv()
            assert isinstance(packet, RoomEvent)
            assert packet.data == b"\x89PNG"


# --- heartbeats -----------------------------------------------------------------------------


async def test_a_client_busy_sending_is_alive_without_pongs_and_a_silent_one_is_not(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # PROTOCOL.md section 11: anything the client sends counts as an answer.
    bus = open_bus(ping_interval=4, ping_timeout=2)
    async with serving(bus) as port, raw_websocket(port) as ws:
        await ws.read_welcome()
        for n in range(20):  # 40 s: ten ping intervals, never a pong
            await ws.send_frame(OP_TEXT, f'[1,"echo",{n}]'.encode())
            await trio.sleep(2)
        assert len(bus.connections) == 1
        while True:  # now silent: closed within ping_interval + ping_timeout
            opcode, payload = await ws.read_frame()
            if opcode == OP_CLOSE:
                break
            assert opcode == OP_PING
        assert int.from_bytes(payload[:2], "big") == 4002


# --- connection capacity --------------------------------------------------------------------


async def test_above_max_connections_new_clients_get_503_and_served_ones_go_on() -> None:
    bus = open_bus(max_connections=2)
    with trio.fail_after(10):
        async with serving(bus) as port, raw_client(port) as first, raw_client(port):
            status, headers, body = await http_get(port, "/health")
            assert status == 503
            assert headers["retry-after"] == "1"
            assert body == b"too many connections\n"
            await first.send(Emit("echo", 1, 1))
            assert await first.recv() == Ack(1, 1)
        # Once they have gone, there is room again.
        async with serving(bus) as port, raw_client(port) as again:
            await again.send(Emit("echo", 2, 2))
            assert await again.recv() == Ack(2, 2)


def test_max_connections_defaults_below_the_descriptor_limit() -> None:
    resource = pytest.importorskip("resource")
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    capacity = EventBus().max_connections
    assert 0 < capacity <= soft - 32
    assert EventBus(max_connections=5).max_connections == 5


class _ExhaustedListener(trio.abc.Listener[trio.abc.Stream]):
    """Fails ``accept`` with EMFILE ``failures`` times, then accepts an in-memory
    stream (whose other end it keeps) at once and another 15 s later, then waits."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.accepted = 0
        self.peers: list[trio.abc.Stream] = []

    async def accept(self) -> trio.abc.Stream:
        await trio.lowlevel.checkpoint()
        if self.failures:
            self.failures -= 1
            raise OSError(errno.EMFILE, "Too many open files")
        if self.accepted < 2:
            if self.accepted:
                await trio.sleep(15)
            self.accepted += 1
            peer, stream = trio.testing.memory_stream_pair()
            self.peers.append(peer)
            return stream
        await trio.sleep_forever()
        raise AssertionError("unreachable")  # pragma: no cover

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


async def test_descriptor_exhaustion_is_logged_once_per_episode(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="eventbus.server")
    listener = _ExhaustedListener(failures=400)  # 40 s of retries every 0.1 s
    bus = open_bus()
    async with trio.open_nursery() as nursery:
        await nursery.start(bus.serve_listeners, [listener])
        await trio.sleep(60)
        bus.shutdown()
    lines = [r for r in caplog.records if "accept" in r.getMessage()]
    assert len(lines) == 2
    assert "Too many open files" in lines[0].getMessage()
    assert lines[0].exc_info is None  # no traceback
    # Said once the accepts have gone on for a while (a quick success amid failures
    # does not end the episode): 400 pauses, one episode.
    assert "accepting connections again (0 open) after 400 pauses" in lines[1].getMessage()


# --- the connection log ---------------------------------------------------------------------


async def test_connections_are_logged_without_their_resume_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="eventbus.server")
    bus = open_bus(max_errors=1)
    with trio.fail_after(10):
        async with serving(bus) as port:
            async with raw_client(port) as client:
                token = client.welcome.resume_token if client.welcome else ""
                sid = client.sid
                await client.send_raw("not json")
                await client.recv()
            status, _ = await refused_upgrade(port, extra=["Origin: https://evil.example"])
            assert status == 403
    text = caplog.text
    assert f"connection {sid} opened from 127.0.0.1:" in text
    assert f"connection {sid} closed by the server: 4000" in text
    assert "handshake from 127.0.0.1:" in text
    assert "refused: 403" in text
    assert token
    assert token not in text


async def test_at_capacity_silent_sockets_give_way_to_a_new_client() -> None:
    # Slowloris: sockets that never send a request used to hold every place for
    # handshake_timeout, so that no new client could get in.
    bus = open_bus(max_connections=2, handshake_timeout=30)
    with trio.fail_after(10):
        async with serving(bus) as port:
            silent = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(2)]
            try:
                await trio.sleep(0.6)  # longer than a stalled handshake may wait
                # Another silent socket takes no one's place: it is closed at once.
                newcomer = await trio.open_tcp_stream("127.0.0.1", port)
                async with newcomer:
                    assert await newcomer.receive_some(100) == b""
                async with raw_client(port) as client:
                    await client.send(Emit("echo", "in", 1))
                    assert await client.recv() == Ack(1, "in")
                # The evicted socket was closed by the server.
                assert await silent[0].receive_some(100) == b""
            finally:
                for stream in silent:
                    await stream.aclose()
