"""The HTTP side over real sockets: health check, plain answers, codec negotiation,
authentication, origins, malformed requests and the handshake timeout.

This module also holds a small hand-driven WebSocket client over raw TCP
(:class:`RawWebSocket`), for what trio-websocket will not do: send invalid UTF-8
or fragmented messages, omit the subprotocol header, or stay silent on pings.
The other server test modules import it from here.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

import pytest
import trio
import trio_websocket

from eventbus import Connection, EventBus, HandshakeRejected, HandshakeRequest
from eventbus.protocol import Ack, Emit, JsonCodec, MsgpackCodec, Role, Welcome

from .conftest import SUBPROTOCOLS, Raw, open_bus, raw_client, serving

# --- helpers shared by the server test modules ------------------------------------------


async def echo(client: Raw, ack_id: int, data: Any = "still here") -> None:
    """An echo request is answered: the connection (and the server) still work."""
    await client.send(Emit("echo", data, ack_id))
    assert await client.recv() == Ack(ack_id, data)


async def close_code(client: Raw, timeout: float = 5) -> int:
    """The next thing the client gets is the server's close: return its code."""
    with pytest.raises(trio_websocket.ConnectionClosed) as info:
        await client.recv(timeout)
    # trio-websocket 0.12 never closes its TCP socket after a close the server
    # started (it waits for the server's FIN, then leaves the socket open, and
    # aclose() is then a no-op): close it here, or it leaks a ResourceWarning.
    await trio.aclose_forcefully(client.ws._stream)
    return info.value.reason.code


# --- a raw WebSocket client over TCP ------------------------------------------------

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# A fixed mask keeps the bytes on the wire the same on every run.
_MASK = b"\x37\xfa\x21\x3d"


def client_frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """One masked client frame (RFC 6455 section 5.2)."""
    head = bytes([(0x80 if fin else 0) | opcode])
    size = len(payload)
    if size < 126:
        head += bytes([0x80 | size])
    elif size < 65536:
        head += bytes([0x80 | 126]) + size.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + size.to_bytes(8, "big")
    masked = bytes(byte ^ _MASK[i % 4] for i, byte in enumerate(payload))
    return head + _MASK + masked


def parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    """Status code and headers (lowercase names) of an HTTP response head."""
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers


async def read_until_eof(stream: trio.abc.ReceiveStream) -> bytes:
    data = b""
    while chunk := await stream.receive_some(65536):
        data += chunk
    return data


async def http_request(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw request bytes; read the whole answer (the server closes after it)."""
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all(request)
        answer = await read_until_eof(stream)
    head, _, body = answer.partition(b"\r\n\r\n")
    status, headers = parse_head(head)
    return status, headers, body


async def http_get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    return await http_request(
        port, f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())


class RawWebSocket:
    """A WebSocket client driven by hand: masked frames out, whole frames in."""

    def __init__(self, stream: trio.SocketStream, headers: dict[str, str], rest: bytes) -> None:
        self.stream = stream
        self.headers = headers
        self._buffer = bytearray(rest)

    async def _read_exactly(self, size: int) -> bytes:
        while len(self._buffer) < size:
            data = await self.stream.receive_some(65536)
            if not data:
                raise EOFError("the server closed the TCP connection")
            self._buffer += data
        out = bytes(self._buffer[:size])
        del self._buffer[:size]
        return out

    async def read_frame(self) -> tuple[int, bytes]:
        """The next frame from the server as ``(opcode, payload)``."""
        first, second = await self._read_exactly(2)
        assert second & 0x80 == 0, "a server frame must not be masked"
        assert first & 0x80, "the server sends whole (final) frames"
        size = second & 0x7F
        if size == 126:
            size = int.from_bytes(await self._read_exactly(2), "big")
        elif size == 127:
            size = int.from_bytes(await self._read_exactly(8), "big")
        return first & 0x0F, await self._read_exactly(size)

    async def read_welcome(self) -> dict[str, Any]:
        opcode, payload = await self.read_frame()
        assert opcode == OP_TEXT
        packet = JsonCodec(Role.CLIENT).decode(payload.decode())
        assert isinstance(packet, Welcome)
        return {"sid": packet.sid, "options": packet.options}

    async def send_frame(self, opcode: int, payload: bytes, *, fin: bool = True) -> None:
        await self.stream.send_all(client_frame(opcode, payload, fin=fin))

    async def read_close(self) -> tuple[int, str]:
        """Read up to the server's close frame (no data frame may come first);
        returns its code and reason."""
        while True:
            opcode, payload = await self.read_frame()
            if opcode == OP_PING:
                continue
            assert opcode == OP_CLOSE, f"expected a close frame, got opcode {opcode}: {payload!r}"
            return int.from_bytes(payload[:2], "big"), payload[2:].decode()

    async def expect_eof(self) -> None:
        """The server drops the TCP connection (after its close frame)."""
        while True:
            data = await self.stream.receive_some(65536)
            if not data:
                return


def upgrade_request(
    port: int, *, path: str = "/", subprotocols: Sequence[str] = (SUBPROTOCOLS["json"],),
    extra: Sequence[str] = (),
) -> bytes:
    lines = [
        f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket",
        "Connection: Upgrade", f"Sec-WebSocket-Key: {_KEY}", "Sec-WebSocket-Version: 13",
        *extra,
    ]
    if subprotocols:
        lines.append("Sec-WebSocket-Protocol: " + ", ".join(subprotocols))
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def refused_upgrade(
    port: int, *, path: str = "/", subprotocols: Sequence[str] = (SUBPROTOCOLS["json"],),
    extra: Sequence[str] = (),
) -> tuple[int, bytes]:
    """Send a WebSocket handshake the server refuses: its HTTP status and body.

    (Raw HTTP rather than trio-websocket: on ConnectionRejected trio-websocket
    0.12 leaves its TCP socket open, a ResourceWarning under filterwarnings=error.)
    """
    status, _, body = await http_request(
        port, upgrade_request(port, path=path, subprotocols=subprotocols, extra=extra))
    assert status != 101
    return status, body


@asynccontextmanager
async def raw_websocket(
    port: int, *, subprotocols: Sequence[str] = (SUBPROTOCOLS["json"],),
    extra: Sequence[str] = (), early: bytes = b"",
) -> AsyncIterator[RawWebSocket]:
    """Complete a WebSocket handshake over raw TCP; yields the client after the 101.

    ``early`` is sent in the same write as the request (frames before the 101).
    """
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        request = upgrade_request(port, subprotocols=subprotocols, extra=extra)
        await stream.send_all(request + early)
        received = b""
        while b"\r\n\r\n" not in received:
            data = await stream.receive_some(65536)
            assert data, f"the server closed during the handshake: {received!r}"
            received += data
        head, _, rest = received.partition(b"\r\n\r\n")
        status, headers = parse_head(head)
        assert status == 101, head
        yield RawWebSocket(stream, headers, rest)


# --- plain HTTP -------------------------------------------------------------------------


async def test_health_answers_200_json_with_the_connection_count() -> None:
    with trio.fail_after(10):
        async with serving(open_bus()) as port:
            status, headers, body = await http_get(port, "/health")
            assert status == 200
            assert headers["content-type"] == "application/json"
            assert json.loads(body) == {"status": "ok", "connections": 0, "adapter": "connected"}
            async with raw_client(port):
                status, _, body = await http_get(port, "/health")
                assert status == 200
                assert json.loads(body) == {
                    "status": "ok", "connections": 1, "adapter": "connected"}


@pytest.mark.parametrize("path", ["/", "/bus", "/health/x", "/?x=1"])
async def test_plain_request_elsewhere_gets_426(path: str) -> None:
    with trio.fail_after(10):
        async with serving(open_bus()) as port:
            status, _, body = await http_get(port, path)
            assert status == 426
            assert b"WebSocket" in body


async def test_browser_client_script_is_served_to_any_origin() -> None:
    with trio.fail_after(10):
        async with serving(open_bus()) as port:
            status, headers, body = await http_get(port, "/eventbus.js")
    assert status == 200
    assert headers["content-type"].startswith("text/javascript")
    assert headers["access-control-allow-origin"] == "*"
    assert body == resources.files("eventbus").joinpath("static/eventbus.js").read_bytes()


async def test_malformed_http_request_gets_400() -> None:
    with trio.fail_after(10):
        async with serving(open_bus()) as port:
            status, _, body = await http_request(port, b"THIS IS NOT HTTP\r\n\r\n")
            assert status == 400
            # Our words, not h11's, which quote the bytes the client sent.
            assert body == b"bad request: not a valid HTTP/1.1 request head\n"
            status, _, body = await http_request(
                port, b"GET / HTTP/1.1\r\nHost: x\r\nbad header line\r\n\r\n")
            assert status == 400
            assert b"bad header" not in body
            # The server is still there.
            status, _, _ = await http_get(port, "/health")
            assert status == 200


# --- codec negotiation ---------------------------------------------------------------


async def test_unknown_subprotocols_only_get_400_naming_the_supported_ones() -> None:
    with trio.fail_after(10):
        async with serving(open_bus()) as port:
            status, body = await refused_upgrade(
                port, subprotocols=["eventbus.v2.json", "chat", "EVENTBUS.V1.JSON"])
            assert status == 400
            assert b"eventbus.v1.json" in body
            assert b"eventbus.v1.msgpack" in body


async def test_no_subprotocol_means_json_and_no_protocol_header() -> None:
    with trio.fail_after(10):
        async with serving(open_bus()) as port:
            async with raw_websocket(port, subprotocols=()) as ws:
                assert "sec-websocket-protocol" not in ws.headers
                expected = base64.b64encode(hashlib.sha1((_KEY + _GUID).encode()).digest())
                assert ws.headers["sec-websocket-accept"] == expected.decode()
                await ws.read_welcome()  # a JSON text frame
                await ws.send_frame(OP_TEXT, b'[1,"echo",{"a":1},1]')
                opcode, payload = await ws.read_frame()
                assert opcode == OP_TEXT
                assert json.loads(payload) == [7, 1, {"a": 1}]
            # trio-websocket offering nothing gets the same.
            async with raw_client(port, subprotocols=[]) as client:
                assert client.ws.subprotocol is None
                await client.send(Emit("echo", "x", 2))
                assert await client.recv() == Ack(2, "x")


async def test_packets_sent_with_the_handshake_are_processed_after_the_welcome() -> None:
    """A client need not wait for the 101 or the welcome (PROTOCOL.md section 3)."""
    early = client_frame(OP_TEXT, b'[1,"echo","early",1]') + client_frame(OP_TEXT, b'[4,"r",2]')
    with trio.fail_after(10):
        async with serving(open_bus()) as port, raw_websocket(port, early=early) as ws:
            await ws.read_welcome()
            assert await ws.read_frame() == (OP_TEXT, b'[7,1,"early"]')
            opcode, payload = await ws.read_frame()
            assert opcode == OP_TEXT
            assert json.loads(payload)[:2] == [7, 2]


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [
        (["eventbus.v1.msgpack"], "eventbus.v1.msgpack"),
        (["eventbus.v1.msgpack", "eventbus.v1.json"], "eventbus.v1.msgpack"),
        (["eventbus.v1.json", "eventbus.v1.msgpack"], "eventbus.v1.json"),
        (["eventbus.v9.json", "EVENTBUS.V1.MSGPACK", "eventbus.v1.json"], "eventbus.v1.json"),
    ],
)
async def test_server_picks_the_first_supported_subprotocol(
    offered: list[str], chosen: str
) -> None:
    with trio.fail_after(10):
        async with serving(open_bus()) as port, trio_websocket.open_websocket_url(
            f"ws://127.0.0.1:{port}/", subprotocols=offered,
        ) as ws:
            assert ws.subprotocol == chosen
            binary = chosen == "eventbus.v1.msgpack"
            codec = (MsgpackCodec if binary else JsonCodec)(Role.CLIENT)
            welcome = await ws.get_message()
            assert isinstance(welcome, bytes if binary else str)
            assert isinstance(codec.decode(welcome), Welcome)
            payload = codec.encode(Emit("echo", [1, "two"], 3))
            await ws.send_message(payload if binary else payload.decode())
            answer = await ws.get_message()
            assert isinstance(answer, bytes if binary else str)
            assert codec.decode(answer) == Ack(3, [1, "two"])


# --- authentication ----------------------------------------------------------------------


def auth_bus(seen: list[HandshakeRequest]) -> EventBus:
    bus = open_bus()

    @bus.authenticate
    async def authenticate(request: HandshakeRequest) -> Any:
        seen.append(request)
        token = request.query.get("token")
        if token is None:
            raise HandshakeRejected(401, "a token is required")
        if token == "banned":
            raise HandshakeRejected(403, "this token is banned")
        return {"user": token, "auth": request.header("Authorization")}

    @bus.on("whoami")
    async def whoami(sock: Connection, data: Any) -> Any:
        return sock.state

    return bus


@pytest.mark.parametrize(("path", "status"), [("/bus", 401), ("/bus?token=banned", 403)])
async def test_authenticate_rejection_is_an_http_status_before_upgrade(
    path: str, status: int
) -> None:
    seen: list[HandshakeRequest] = []
    with trio.fail_after(10):
        async with serving(auth_bus(seen)) as port:
            refused, body = await refused_upgrade(port, path=path)
            assert refused == status
            assert b"token" in body
            assert len(seen) == 1
            _, _, body = await http_get(port, "/health")
            assert json.loads(body)["connections"] == 0


async def test_authenticate_sees_the_request_and_its_result_is_sock_state() -> None:
    seen: list[HandshakeRequest] = []
    with trio.fail_after(10):
        async with serving(auth_bus(seen)) as port, raw_client(
            port, "msgpack", path="/bus/v1?token=ada&lang=en",
            headers=[("Authorization", "Bearer xyz"), ("X-Custom", "1")],
            subprotocols=["eventbus.v1.msgpack", "eventbus.v1.json"],
        ) as client:
            await client.send(Emit("whoami", None, 1))
            assert await client.recv() == Ack(1, {"user": "ada", "auth": "Bearer xyz"})
            (request,) = seen
            assert request.path == "/bus/v1"
            assert dict(request.query) == {"token": "ada", "lang": "en"}
            assert ("authorization", "Bearer xyz") in request.headers
            assert ("x-custom", "1") in request.headers
            assert request.header("X-CUSTOM") == "1"
            assert list(request.subprotocols) == ["eventbus.v1.msgpack", "eventbus.v1.json"]
            local = client.ws.local
            assert isinstance(local, trio_websocket.Endpoint)
            assert request.remote == ("127.0.0.1", local.port)


async def test_without_authenticate_hook_state_is_an_empty_dict() -> None:
    bus = open_bus()

    @bus.on("state")
    async def state(sock: Connection, data: Any) -> Any:
        return sock.state

    with trio.fail_after(10):
        async with serving(bus) as port, raw_client(port) as client:
            await client.send(Emit("state", None, 1))
            assert await client.recv() == Ack(1, {})


# --- origins ------------------------------------------------------------------------------


async def test_allowed_origins() -> None:
    bus = open_bus(allowed_origins=["https://good.example"])
    with trio.fail_after(10):
        async with serving(bus) as port:
            status, body = await refused_upgrade(port, extra=["Origin: https://evil.example"])
            assert status == 403
            assert b"evil" not in body  # what the client sent is not echoed back
            for headers in ([("Origin", "https://good.example")], []):
                async with raw_client(port, headers=headers) as client:
                    await client.send(Emit("echo", "hi", 1))
                    assert await client.recv() == Ack(1, "hi")


async def test_by_default_only_pages_of_the_bus_own_origin_may_connect() -> None:
    # Cross-site WebSocket hijacking: any page could use the user's cookies.
    with trio.fail_after(10):
        async with serving(open_bus()) as port:
            status, _ = await refused_upgrade(port, extra=["Origin: https://evil.example"])
            assert status == 403
            # A page served by the bus itself (the browser test's case) connects.
            own = [("Origin", f"http://127.0.0.1:{port}")]
            async with raw_client(port, headers=own) as client:
                await client.send(Emit("echo", "hi", 1))
                assert await client.recv() == Ack(1, "hi")


async def test_a_star_allows_any_origin() -> None:
    with trio.fail_after(10):
        async with serving(open_bus(allowed_origins=["*"])) as port, \
                raw_client(port, headers=[("Origin", "https://any.example")]) as client:
            await client.send(Emit("echo", "hi", 1))
            assert await client.recv() == Ack(1, "hi")


async def test_two_origin_headers_are_refused() -> None:
    # The first one used to win: good-then-evil was accepted.
    bus = open_bus(allowed_origins=["https://good.example"])
    with trio.fail_after(10):
        async with serving(bus) as port:
            status, body = await refused_upgrade(
                port, extra=["Origin: https://good.example", "Origin: https://evil.example"])
            assert status == 400
            assert b"more than one Origin" in body


@pytest.mark.parametrize("method", ["POST", "PUT"])
async def test_an_upgrade_that_is_not_a_get_is_refused_with_405(method: str) -> None:
    with trio.fail_after(10):
        async with serving(open_bus()) as port:
            request = upgrade_request(port).replace(b"GET ", method.encode() + b" ", 1)
            status, headers, _ = await http_request(port, request)
            assert status == 405
            assert headers["allow"] == "GET"


@pytest.mark.parametrize("path", ["/health", "/eventbus.js"])
async def test_plain_paths_answer_get_and_head_only(path: str) -> None:
    with trio.fail_after(10):
        async with serving(open_bus()) as port:
            request = f"{{}} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
            status, _, body = await http_request(port, request.format("HEAD").encode())
            assert (status, body) == (200, b"")
            status, headers, _ = await http_request(port, request.format("POST").encode())
            assert status == 405
            assert headers["allow"] == "GET, HEAD"


# --- handshake timeout ----------------------------------------------------------------


@pytest.mark.parametrize("sent", [b"", b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n"])
async def test_silent_client_is_dropped_after_handshake_timeout(sent: bytes) -> None:
    bus = open_bus(handshake_timeout=0.3)
    with trio.fail_after(5):
        async with serving(bus) as port:
            async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
                start = trio.current_time()
                if sent:
                    await stream.send_all(sent)
                assert await read_until_eof(stream) == b""
                assert trio.current_time() - start >= 0.29
            # A client that does complete the handshake is served as usual.
            async with raw_client(port) as client:
                await client.send(Emit("echo", 1, 1))
                assert await client.recv() == Ack(1, 1)
