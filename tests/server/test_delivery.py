"""Backpressure: a stalled client never slows the others, and every policy keeps
memory bounded and drops visible (4001 for reliable, gap packets otherwise)."""

from __future__ import annotations

import base64
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio.lowlevel
from wsproto import ConnectionType
from wsproto.connection import Connection as WSConnection
from wsproto.events import TextMessage

from eventbus import Connection, Delivery, Disconnect, EventBus
from eventbus.protocol import Gap, JsonCodec, Packet, Role, RoomEvent

from .conftest import raw_client, serving

PAYLOAD = "x" * 4000


class StalledClient:
    """A WebSocket client on a raw socket with a tiny receive buffer, which stops
    reading after the handshake until told to read again."""

    def __init__(self, sock: trio.socket.SocketType) -> None:
        self.sock = sock
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.codec = JsonCodec(Role.CLIENT)

    @classmethod
    @asynccontextmanager
    async def connect(cls, port: int) -> AsyncIterator[StalledClient]:
        client = await cls.open(port)
        try:
            yield client
        finally:
            client.close()

    @classmethod
    async def open(cls, port: int) -> StalledClient:
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        await sock.send(
            f"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += await sock.recv(1)  # byte by byte: leave the frames in the socket
        assert head.startswith(b"HTTP/1.1 101")
        client = cls(sock)
        # The welcome: once it is here the server has registered the connection.
        await client.read_packets(lambda packets: len(packets) == 1)
        return client

    async def read_packets(self, until: Any, limit: float = 10) -> list[Packet]:
        """Read until ``until(packets)`` holds."""
        packets: list[Packet] = []
        parts: list[str] = []
        with trio.fail_after(limit):
            while not until(packets):
                data = await self.sock.recv(65536)
                assert data, "server closed the connection"
                self.ws.receive_data(data)
                for event in self.ws.events():
                    if isinstance(event, TextMessage):
                        parts.append(event.data)
                        if event.message_finished:
                            packets.append(self.codec.decode("".join(parts)))
                            parts.clear()
        return packets

    def close(self) -> None:
        self.sock.close()


def join_all(bus: EventBus, room: str, count: int) -> list[Connection]:
    assert len(bus.connections) == count
    members = list(bus.connections.values())
    for sock in members:
        sock.join(room)
    return members


async def test_stalled_client_is_dropped_and_others_get_everything_at_full_rate() -> None:
    bus = EventBus(open_rooms=True, send_queue_size=64, send_queue_bytes=256 * 1024)
    ended: list[Disconnect] = []
    peak_queued = 0

    @bus.on_disconnect
    async def gone(sock: Connection, disconnect: Disconnect) -> None:
        ended.append(disconnect)

    count, rate = 400, 200
    with trio.fail_after(20):
        async with serving(bus) as port, raw_client(port) as a, raw_client(port) as b, \
                StalledClient.connect(port):
            join_all(bus, "feed", 3)
            stalled_sock = next(c for c in bus.connections.values() if c.sid not in (a.sid, b.sid))
            received: dict[str, list[int]] = {a.sid: [], b.sid: []}

            async def consume(client: Any) -> None:
                while len(received[client.sid]) < count:
                    packet = await client.recv()
                    assert isinstance(packet, RoomEvent)
                    received[client.sid].append(packet.data["n"])

            start = trio.current_time()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(consume, a)
                nursery.start_soon(consume, b)
                for n in range(count):
                    bus.emit("tick", {"n": n, "pad": PAYLOAD}, to="feed")
                    if not stalled_sock.closed:
                        queued = stalled_sock.statistics()["queued_bytes"]
                        peak_queued = max(peak_queued, queued)
                    await trio.sleep(1 / rate)
            elapsed = trio.current_time() - start
            assert received[a.sid] == list(range(count))
            assert received[b.sid] == list(range(count))
            # Full rate: the readers finished with the publisher, not behind a stalled peer.
            assert elapsed < count / rate + 1.5
            assert peak_queued <= 256 * 1024
            assert [d.code for d in ended] == [4001]
            assert ended[0].by_server


async def test_volatile_drops_are_reported_with_a_gap() -> None:
    bus = EventBus(open_rooms=True, send_queue_size=16, send_queue_bytes=1024 * 1024)
    with trio.fail_after(20):
        async with serving(bus) as port, StalledClient.connect(port) as stalled:
            (sock,) = join_all(bus, "game", 1)
            total = 300
            for n in range(total):
                bus.emit("state", {"n": n, "pad": PAYLOAD}, to="game", delivery="volatile")
                await trio.lowlevel.checkpoint()
            assert sock.statistics()["dropped"] > 0
            assert not sock.closed  # volatile overflow never disconnects

            def complete(packets: list[Packet]) -> bool:
                events = [p for p in packets if isinstance(p, RoomEvent)]
                gaps = sum(p.count for p in packets if isinstance(p, Gap))
                return len(events) + gaps >= total

            packets = await stalled.read_packets(complete)
            events = [p for p in packets if isinstance(p, RoomEvent)]
            gaps = [p for p in packets if isinstance(p, Gap)]
            assert gaps, "drops must be reported"
            assert all(g.room == "game" for g in gaps)
            assert len(events) + sum(g.count for g in gaps) == total
            # The counter survives the queue emptying.
            assert sock.statistics()["dropped"] == sum(g.count for g in gaps)
            seen = [e.data["n"] for e in events]
            assert seen == sorted(seen)


async def test_latest_replaces_older_state_and_the_newest_arrives() -> None:
    bus = EventBus(open_rooms=True, send_queue_size=16, send_queue_bytes=1024 * 1024)
    with trio.fail_after(20):
        async with serving(bus) as port, StalledClient.connect(port) as stalled:
            (sock,) = join_all(bus, "game", 1)
            total = 300
            for n in range(total):
                bus.emit("pos", {"n": n, "pad": PAYLOAD}, to="game", delivery=Delivery.LATEST,
                         key="player-1")
                await trio.lowlevel.checkpoint()
            stats = sock.statistics()
            assert stats["dropped"] > 0
            assert stats["queued_messages"] <= 16 + 1  # a gap report may add one

            def got_last(packets: list[Packet]) -> bool:
                return any(isinstance(p, RoomEvent) and p.data["n"] == total - 1
                           for p in packets)

            packets = await stalled.read_packets(got_last)
            events = [p for p in packets if isinstance(p, RoomEvent)]
            assert len(events) < total
            seen = [e.data["n"] for e in events]
            assert seen == sorted(seen)
            assert seen[-1] == total - 1
