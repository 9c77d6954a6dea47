"""The abusive clients, one per scenario; each runs in its own process.

Every flood but ``fd-exhaustion`` is one WebSocket connection at a time: it sends
its payload over and over until the deadline, reads (and throws away) whatever the
server sends, so that it is never closed merely for not reading, and when the
server closes it, it connects again and goes on, as a real attacker would. What
the server did to it (close codes, refused connections) is part of the result.
"""

from __future__ import annotations

import collections
import errno
import json
import os
import resource
import select
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from .wire import (
    BINARY,
    CLOSE,
    CONTINUATION,
    JSON,
    MSGPACK,
    PING,
    TEXT,
    client_frame,
    close_code,
    connect,
    send_until,
)

__all__ = ["FLOODS", "main"]

#: Size of the payloads of the decode-amplification floods (under the default
#: ``max_frame`` of 1 MiB, so that no size limit stops them).
PAYLOAD_BYTES = 900_000
#: Size of the text of each ERROR packet in the log flood.
ERROR_TEXT_BYTES = 64 * 1024
#: A line the log flood tries to plant in the server's log, once per text line; it
#: is forged when it starts a line of the log (a server that quotes the text keeps
#: it inside its own line).
FORGED_LINE = "2026-01-01 00:00:00,000 ERROR eventbus.server: FORGED-LOG-LINE do not trust this"
#: Frames per write for the floods of tiny frames.
BATCH_FRAMES = 10_000
#: Silent TCP connections the descriptor flood keeps open.
SILENT_SOCKETS = 1_000

# What a flood sends on one connection: (bytes to write, units they count as).
Chunks = Iterator[tuple[bytes, int]]


class Abuser:
    """One abusive WebSocket connection: a reader thread drains what the server
    sends and notices when it ends the connection."""

    def __init__(self, port: int, subprotocol: str) -> None:
        self.sock, _ = connect(port, subprotocol)
        self.sock.setblocking(False)
        self.key = os.urandom(4)
        self.ended = threading.Event()
        self.received = 0
        self.close_code: int | str | None = None
        self._closing = False
        self._tail = b""
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        # The same non-blocking socket as the sender's (a dup would share its
        # O_NONBLOCK flag anyway); select() does the waiting.
        sock = self.sock
        try:
            while not self._closing:
                readable, _, _ = select.select([sock], [], [], 0.2)
                if not readable:
                    continue
                try:
                    data = sock.recv(1 << 20)
                except BlockingIOError:
                    continue
                if not data:
                    break
                self.received += len(data)
                self._tail = (self._tail + data)[-256:]
        except (OSError, ValueError):  # ValueError: select() on a closed socket
            pass
        finally:
            self.close_code = _last_close_code(self._tail)
            self.ended.set()

    def close(self) -> None:
        self._closing = True
        self._reader.join(1.0)
        self.sock.close()


def _last_close_code(tail: bytes) -> int | str:
    """The code of the close frame the received bytes end with (best effort: the
    reader does not parse the server's frames, to keep up with floods of pongs)."""
    for size in range(0, 126):
        start = len(tail) - size - 2
        if start >= 0 and tail[start] == 0x80 | CLOSE and tail[start + 1] == size:
            return close_code(tail[start + 2:]) or "close"
    return "eof"


def run_flood(port: int, deadline: float, subprotocol: str,
              chunks: Callable[[bytes], Chunks]) -> dict[str, Any]:
    """Send ``chunks(key)`` on one connection after another until ``deadline``."""
    stats: dict[str, Any] = {"connections": 0, "refused": collections.Counter(),
                             "closes": collections.Counter(), "bytes_sent": 0, "units": 0,
                             "bytes_received": 0, "connected_at": []}
    while time.monotonic() < deadline:
        try:
            abuser = Abuser(port, subprotocol)
        except OSError as exc:
            stats["refused"][str(exc)[:80]] += 1
            time.sleep(0.05)
            continue
        stats["connections"] += 1
        stats["connected_at"].append(time.monotonic())
        try:
            for data, units in chunks(abuser.key):
                if abuser.ended.is_set() or time.monotonic() >= deadline:
                    break
                if not send_until(abuser.sock, data, deadline):
                    break
                stats["bytes_sent"] += len(data)
                stats["units"] += units
        except OSError:
            pass
        if time.monotonic() < deadline:
            abuser.ended.wait(1.0)  # the server is ending it: let its close frame in
        by_server = abuser.ended.is_set()
        abuser.close()
        stats["bytes_received"] += abuser.received
        if by_server:
            stats["closes"][str(abuser.close_code)] += 1
    return stats


def _repeat(frame: bytes, units: int = 1) -> Chunks:
    while True:
        yield frame, units


# --- the floods ---------------------------------------------------------------------


def json_empty_arrays(key: bytes) -> Chunks:
    """EMIT ``[1,"slow",[[],[],...]]`` of :data:`PAYLOAD_BYTES`, without an ack id."""
    count = (PAYLOAD_BYTES - 16) // 3
    text = b'[1,"slow",[' + b"[]," * (count - 1) + b"[]]]"
    return _repeat(client_frame(TEXT, text, key=key))


def _msgpack_emit_head(event: bytes) -> bytes:
    return bytes([0x93, 0x01, 0xA0 | len(event)]) + event


def msgpack_binary(key: bytes) -> Chunks:
    """EMIT ``[1,"slow",<bin of PAYLOAD_BYTES>]`` (msgpack), without an ack id."""
    body = _msgpack_emit_head(b"slow") + b"\xc6" + struct.pack("!I", PAYLOAD_BYTES)
    return _repeat(client_frame(BINARY, body + os.urandom(PAYLOAD_BYTES), key=key))


def msgpack_empty_arrays(key: bytes) -> Chunks:
    """EMIT ``[1,"slow",[[],[],...]]`` (msgpack: array32 of 0x90 bytes), no ack id."""
    count = PAYLOAD_BYTES - 16
    body = _msgpack_emit_head(b"slow") + b"\xdd" + struct.pack("!I", count) + b"\x90" * count
    return _repeat(client_frame(BINARY, body, key=key))


def one_byte_frames(key: bytes) -> Chunks:
    """EMIT ``[1,"echo","aaa..."]`` of :data:`PAYLOAD_BYTES`, no ack id, split into
    frames of one byte each (a text frame, then continuation frames)."""
    text = b'[1,"echo","' + b"a" * (PAYLOAD_BYTES - 14) + b'"]'
    count = len(text)
    table = bytes(b ^ key[0] for b in range(256))
    out = bytearray(7 * count)
    out[0::7] = bytes([CONTINUATION]) * count  # FIN clear
    out[1::7] = b"\x81" * count  # masked, 1 byte
    for i in range(4):
        out[2 + i::7] = key[i:i + 1] * count
    out[6::7] = text.translate(table)
    out[0] = TEXT
    out[-7] = 0x80 | CONTINUATION
    message = bytes(out)
    step = 7 * BATCH_FRAMES
    pieces = [(message[i:i + step], len(message[i:i + step]) // 7)
              for i in range(0, len(message), step)]
    while True:
        yield from pieces


def empty_continuations(key: bytes) -> Chunks:
    """A text frame without FIN, then 0-byte continuation frames without end."""
    yield client_frame(TEXT, b'[1,"echo",', fin=False, key=key), 1
    yield from _repeat(client_frame(CONTINUATION, b"", fin=False, key=key) * BATCH_FRAMES,
                       BATCH_FRAMES)


def ping_flood(key: bytes) -> Chunks:
    """Empty pings (6 bytes each), as fast as they go (the pongs are read)."""
    return _repeat(client_frame(PING, b"", key=key) * BATCH_FRAMES, BATCH_FRAMES)


def error_reports(key: bytes) -> Chunks:
    """ERROR ``[8,null,"x",text]``: a client's error report, which the server logs;
    the text is :data:`ERROR_TEXT_BYTES` of lines that look like log lines."""
    text = "\n".join([FORGED_LINE] * (ERROR_TEXT_BYTES // (len(FORGED_LINE) + 1)))
    packet = json.dumps([8, None, "x", text]).encode()
    return _repeat(client_frame(TEXT, packet, key=key))


def fd_exhaustion(port: int, deadline: float) -> dict[str, Any]:
    """Keep :data:`SILENT_SOCKETS` TCP connections open that never send a byte;
    replace each one the server closes."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, SILENT_SOCKETS + 256), hard))
    selector = selectors.DefaultSelector()
    stats: dict[str, Any] = {"opened": 0, "closed_by_server": 0, "refused":
                             collections.Counter(), "peak_open": 0}
    open_now = 0
    try:
        while time.monotonic() < deadline:
            while open_now < SILENT_SOCKETS:
                sock = socket.socket()
                sock.setblocking(False)
                err = sock.connect_ex(("127.0.0.1", port))
                if err not in (0, errno.EINPROGRESS):
                    stats["refused"][errno.errorcode.get(err, str(err))] += 1
                    sock.close()
                    break
                selector.register(sock, selectors.EVENT_READ)
                open_now += 1
                stats["opened"] += 1
            stats["peak_open"] = max(stats["peak_open"], open_now)
            for key, _ in selector.select(timeout=0.05):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    data = sock.recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    selector.unregister(sock)
                    sock.close()
                    open_now -= 1
                    stats["closed_by_server"] += 1
    finally:
        for key in list(selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        selector.close()
    return stats


# name: (subprotocol, chunks), or None for a flood that is not one WebSocket.
FLOODS: dict[str, tuple[str, Callable[[bytes], Chunks]] | None] = {
    "json-empty-arrays": (JSON, json_empty_arrays),
    "msgpack-binary": (MSGPACK, msgpack_binary),
    "msgpack-empty-arrays": (MSGPACK, msgpack_empty_arrays),
    "one-byte-frames": (JSON, one_byte_frames),
    "empty-continuations": (JSON, empty_continuations),
    "ping-flood": (JSON, ping_flood),
    "error-reports": (JSON, error_reports),
    "fd-exhaustion": None,
}


def main(argv: list[str]) -> int:
    """``abuser SCENARIO PORT SECONDS``: run one flood, print its result as JSON."""
    name, port, seconds = argv[0], int(argv[1]), float(argv[2])
    started = time.monotonic()
    deadline = started + seconds
    flood = FLOODS[name]
    print("started", flush=True)
    if flood is None:
        stats = fd_exhaustion(port, deadline)
    else:
        subprotocol, chunks = flood
        stats = run_flood(port, deadline, subprotocol, chunks)
    stats["started"] = started
    stats["ended"] = time.monotonic()
    print(json.dumps(stats), flush=True)
    return 0
