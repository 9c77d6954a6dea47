"""The HTTP side of a connection: the request, the upgrade, and plain answers.

h11 parses the request. A WebSocket upgrade is handed to wsproto
(``initiate_upgrade_connection`` takes the request h11 already parsed); anything
else gets a plain answer on the same port: ``GET /health``, the browser client
script, or 426 Upgrade Required.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from importlib import resources
from urllib.parse import parse_qsl, urlsplit

import attrs
import h11
import trio
from wsproto import ConnectionType
from wsproto.connection import Connection as WSConnection
from wsproto.events import AcceptConnection, Request
from wsproto.handshake import H11Handshake

from ..errors import HandshakeRejected

__all__ = [
    "CLIENT_SCRIPT_PATH",
    "HandshakeRequest",
    "HttpExchange",
    "accept_upgrade",
    "plain_answer",
    "read_request",
    "send_response",
]

#: Where the browser client is served, as Socket.IO serves its own.
CLIENT_SCRIPT_PATH = "/eventbus.js"
_MAX_REQUEST = 16_384
_RECEIVE = 65_536


@attrs.frozen
class HandshakeRequest:
    """What the ``authenticate`` hook sees of a WebSocket handshake.

    Attributes:
        path: The request path without the query string.
        query: The query parameters (the last value wins when a name repeats).
        headers: Every header as ``(lowercase name, value)``, in order.
        subprotocols: The subprotocols the client offered, in its order.
        remote: The peer's address as ``(host, port)``, when known.
    """

    path: str
    query: Mapping[str, str]
    headers: Sequence[tuple[str, str]]
    subprotocols: Sequence[str]
    remote: tuple[str, int] | None = None

    def header(self, name: str) -> str | None:
        """The value of a header (the first, if repeated), or ``None``."""
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return None


@attrs.define
class HttpExchange:
    """A parsed request on its h11 connection, with the bytes read past it."""

    conn: h11.Connection
    request: h11.Request
    trailing: bytes

    @property
    def is_websocket(self) -> bool:
        upgrade = connection = b""
        for name, value in self.request.headers:
            if name == b"upgrade":
                upgrade = value.lower()
            elif name == b"connection":
                connection = value.lower()
        return upgrade == b"websocket" and b"upgrade" in connection

    def handshake_request(self, remote: tuple[str, int] | None) -> HandshakeRequest:
        target = self.request.target.decode("latin-1")
        parts = urlsplit(target)
        headers = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in self.request.headers
        ]
        offered = [
            token.strip()
            for name, value in headers if name == "sec-websocket-protocol"
            for token in value.split(",") if token.strip()
        ]
        return HandshakeRequest(
            path=parts.path or "/", query=dict(parse_qsl(parts.query)), headers=headers,
            subprotocols=offered, remote=remote,
        )


async def read_request(stream: trio.abc.Stream) -> HttpExchange | None:
    """Read one HTTP request head; ``None`` if the peer left before sending one.

    Raises:
        HandshakeRejected: 400 for a request h11 cannot parse or that is too large.
    """
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_REQUEST)
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            # h11's message quotes the offending bytes: never echo them back.
            raise HandshakeRejected(
                exc.error_status_hint, "bad request: not a valid HTTP/1.1 request head"
            ) from None
        if isinstance(event, h11.Request):
            # h11 bounds only a head still arriving; bound a complete one too.
            size = len(event.target) + sum(len(n) + len(v) + 4 for n, v in event.headers)
            if size > _MAX_REQUEST:
                raise HandshakeRejected(431, "request head too large")
            trailing, _closed = conn.trailing_data
            return HttpExchange(conn, event, bytes(trailing))
        if event is h11.NEED_DATA:
            data = await stream.receive_some(_RECEIVE)
            if not data:
                return None
            conn.receive_data(bytes(data))
        else:
            return None


async def send_response(
    stream: trio.abc.Stream, exchange: HttpExchange | None, status: int, body: bytes,
    content_type: str = "text/plain; charset=utf-8", extra: Sequence[tuple[str, str]] = (),
) -> None:
    """Answer a plain HTTP request (or refuse a handshake) and end the exchange."""
    conn = exchange.conn if exchange is not None else h11.Connection(h11.SERVER)
    headers = [
        ("content-type", content_type), ("content-length", str(len(body))),
        ("connection", "close"), *extra,
    ]
    phrase = HTTPStatus(status).phrase
    if exchange is None:
        # No request was parsed (it was malformed): h11 will not let us answer it.
        head = f"HTTP/1.1 {status} {phrase}\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in headers) + "\r\n"
        await stream.send_all(head.encode("latin-1") + body)
        return
    response = h11.Response(status_code=status, headers=headers, reason=phrase.encode())
    data = conn.send(response) or b""
    if exchange.request.method != b"HEAD":
        data += conn.send(h11.Data(data=body)) or b""
    data += conn.send(h11.EndOfMessage()) or b""
    await stream.send_all(data)


#: Paths answered with plain HTTP, and the methods they answer.
_PLAIN_METHODS = "GET, HEAD"


def plain_answer(
    method: str, path: str, health: tuple[int, Mapping[str, object]],
) -> tuple[int, bytes, str, list[tuple[str, str]]]:
    """Status, body, content type and extra headers for a request that is not an
    upgrade: ``/health`` (readiness: ``health`` is the bus's ``(status, body)``),
    ``/live`` (liveness: 200 while the process answers) and the browser client
    script answer GET and HEAD (405 for other methods), any other path 426."""
    if path in ("/health", "/live", CLIENT_SCRIPT_PATH) and method not in ("GET", "HEAD"):
        return (405, f"{path} answers GET and HEAD only\n".encode(),
                "text/plain; charset=utf-8", [("allow", _PLAIN_METHODS)])
    if path == "/health":
        status, info = health
        return status, json.dumps(info).encode(), "application/json", []
    if path == "/live":
        return 200, b'{"status": "alive"}', "application/json", []
    if path == CLIENT_SCRIPT_PATH:
        script = resources.files("eventbus").joinpath("static/eventbus.js")
        if script.is_file():
            # A public script: pages on other origins may import it as a module.
            cors = [("access-control-allow-origin", "*")]
            return 200, script.read_bytes(), "text/javascript; charset=utf-8", cors
        return 404, b"the browser client is not installed\n", "text/plain; charset=utf-8", []
    return (
        426,
        b"this is a WebSocket endpoint: connect with a WebSocket client"
        b" (subprotocol eventbus.v1.json or eventbus.v1.msgpack)\n",
        "text/plain; charset=utf-8",
        [("upgrade", "websocket")],
    )


def accept_upgrade(exchange: HttpExchange, subprotocol: str | None) -> tuple[WSConnection, bytes]:
    """Complete the WebSocket handshake.

    Returns:
        The open wsproto connection (already fed the bytes read past the request)
        and the ``101 Switching Protocols`` response to write.
    """
    handshake = H11Handshake(ConnectionType.SERVER)
    handshake.initiate_upgrade_connection(
        list(exchange.request.headers), exchange.request.target)
    for event in handshake.events():
        if isinstance(event, Request):
            break
    else:  # pragma: no cover - h11 already accepted this request
        raise HandshakeRejected(400, "not a WebSocket handshake")
    # No extensions: permessage-deflate would make every recipient's frame differ,
    # and a broadcast relies on writing the same bytes to everyone.
    response = handshake.send(AcceptConnection(subprotocol=subprotocol, extensions=[]))
    ws = handshake.connection
    assert ws is not None
    if exchange.trailing:
        ws.receive_data(exchange.trailing)
    return ws, response
