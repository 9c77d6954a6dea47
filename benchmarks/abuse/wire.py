"""WebSocket by hand: the handshake, masked client frames, and a reader for the
server's frames (standard library only).

The abusive clients need control that no client library gives: the size and
fragmentation of every frame, and frames a library would never send. Client frames
are always masked (RFC 6455 section 5.3), with a random key per connection; a payload
sent over and over is masked once and the frame reused.
"""

from __future__ import annotations

import base64
import os
import select
import socket
import struct
import time

__all__ = [
    "BINARY",
    "CLOSE",
    "CONTINUATION",
    "JSON",
    "MSGPACK",
    "PING",
    "PONG",
    "TEXT",
    "FrameReader",
    "HandshakeFailed",
    "client_frame",
    "close_code",
    "connect",
    "mask",
    "send_until",
]

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
JSON = "eventbus.v1.json"
MSGPACK = "eventbus.v1.msgpack"


class HandshakeFailed(OSError):
    """The server refused the upgrade (its status line is the message), or the
    connection ended or timed out before it answered."""


def mask(payload: bytes, key: bytes) -> bytes:
    """XOR ``payload`` with the 4-byte ``key`` repeated (fast for large payloads)."""
    if not payload:
        return payload
    size = len(payload)
    stream = (key * (size // 4 + 1))[:size]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(size, "big")


def client_frame(opcode: int, payload: bytes = b"", *, fin: bool = True,
                 key: bytes | None = None) -> bytes:
    """One masked client frame."""
    key = os.urandom(4) if key is None else key
    first = (0x80 if fin else 0) | opcode
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", first, 0x80 | size)
    elif size < 65536:
        header = struct.pack("!BBH", first, 0x80 | 126, size)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, size)
    return header + key + mask(payload, key)


def connect(port: int, subprotocol: str | None = JSON, *, timeout: float = 5.0,
            host: str = "127.0.0.1") -> tuple[socket.socket, bytes]:
    """Open a WebSocket to ``ws://host:port/``.

    Returns:
        The connected (blocking) socket and the bytes that came after the
        handshake response (the start of the server's first frame, usually).

    Raises:
        HandshakeFailed: the server answered anything but 101, or did not answer
            within ``timeout``.
        OSError: the TCP connection failed.
    """
    deadline = time.monotonic() + timeout
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            "GET / HTTP/1.1", f"Host: {host}:{port}", "Upgrade: websocket",
            "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13",
        ]
        if subprotocol:
            lines.append(f"Sec-WebSocket-Protocol: {subprotocol}")
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        buffer = b""
        while b"\r\n\r\n" not in buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise HandshakeFailed(f"no handshake response within {timeout} s")
            sock.settimeout(left)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                raise HandshakeFailed(f"no handshake response within {timeout} s") from None
            if not chunk:
                raise HandshakeFailed("connection closed during the handshake")
            buffer += chunk
        head, _, rest = buffer.partition(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0].decode(errors="replace")
        if " 101 " not in status + " ":
            raise HandshakeFailed(status)
        sock.settimeout(None)
    except BaseException:
        sock.close()
        raise
    return sock, rest


class FrameReader:
    """Parses the server's (unmasked) frames from the bytes given to :meth:`feed`."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._parts: list[bytes] = []
        self._opcode = 0

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """Add received bytes; return the complete (opcode, payload) messages and
        control frames they finish, in order."""
        self._buffer += data
        out: list[tuple[int, bytes]] = []
        buf = self._buffer
        while len(buf) >= 2:
            first, second = buf[0], buf[1]
            size = second & 0x7F
            start = 2
            if size == 126:
                if len(buf) < 4:
                    break
                size = struct.unpack_from("!H", buf, 2)[0]
                start = 4
            elif size == 127:
                if len(buf) < 10:
                    break
                size = struct.unpack_from("!Q", buf, 2)[0]
                start = 10
            if second & 0x80:  # a masked server frame is a protocol error; read it anyway
                start += 4
            if len(buf) < start + size:
                break
            payload = bytes(buf[start:start + size])
            del buf[:start + size]
            opcode, fin = first & 0x0F, bool(first & 0x80)
            if opcode >= CLOSE:
                out.append((opcode, payload))
                continue
            if opcode != CONTINUATION:
                self._opcode = opcode
            self._parts.append(payload)
            if fin:
                out.append((self._opcode, b"".join(self._parts)))
                self._parts.clear()
        return out


def close_code(payload: bytes) -> int | None:
    """The status code of a close frame's payload, if it has one."""
    return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None


def send_until(sock: socket.socket, data: bytes | memoryview, deadline: float) -> bool:
    """Write all of ``data`` to a non-blocking socket unless ``deadline`` passes.

    Returns:
        True when everything was written, False at the deadline (the connection is
        then in the middle of a frame and good for nothing but closing).

    Raises:
        OSError: the connection broke (the server closed it, most likely).
    """
    view = memoryview(data)
    while view:
        try:
            sent = sock.send(view)
        except BlockingIOError:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            select.select([], [sock], [], min(left, 0.1))
            continue
        view = view[sent:]
    return True
