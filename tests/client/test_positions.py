"""The client's record of room positions (``client.positions``), which RESUME will
send: it follows the order packets arrive in, and within an epoch it only moves
forward.

A scripted server on 127.0.0.1 (:func:`.conftest.scripted`) writes a ROOM_EVENT
ahead of the ACK of an earlier position, as a real server may when another member's
message is fanned out while the ACK waits to be written.
"""

from __future__ import annotations

from typing import Any

import trio
import trio_websocket

import eventbus
from eventbus import Backoff
from eventbus.protocol import Ack, Join, Position, Publish, RoomEvent

from .conftest import Peer, scripted

FAST = Backoff(initial=0.01, cap=0.05)


async def hold(peer: Peer) -> None:
    """Answer nothing more; return when the client closes."""
    try:
        while True:
            await peer.receive()
    except trio_websocket.ConnectionClosed:
        return


def answer(request: Join | Publish) -> int:
    """The ack id the scripted server answers ``request`` with."""
    assert request.ack_id is not None
    return request.ack_id


def event_seen(client: eventbus.Client, event: str) -> trio.Event:
    """Set once a room event named ``event`` has been handled (after the reader
    recorded its position)."""
    seen = trio.Event()
    client.on(event)(lambda data: seen.set())
    return seen


async def test_a_publish_ack_behind_a_later_room_event_does_not_move_the_position_back() -> None:
    async def script(peer: Peer) -> None:
        join = await peer.receive()
        assert isinstance(join, Join)
        await peer.send(Ack(answer(join), ["e1", 3]))
        publish = await peer.receive()
        assert isinstance(publish, Publish)
        # Another member's message (seq 5) goes out before the ACK of this one (seq 4).
        await peer.send(RoomEvent("lobby", "chat", "theirs", "e1", 5),
                        Ack(answer(publish), ["e1", 4]))
        await peer.receive()  # the client's "echo" call: the room starts a new history
        await peer.send(RoomEvent("lobby", "restart", None, "e2", 1))
        await hold(peer)

    with trio.fail_after(10):
        async with scripted(script) as url, eventbus.connect(url) as client:
            assert await client.join("lobby") == Position("e1", 3)
            assert client.positions == {"lobby": Position("e1", 3)}
            assert await client.publish("lobby", "chat", "mine") == Position("e1", 4)
            assert client.positions == {"lobby": Position("e1", 5)}
            # A new epoch replaces the position, although its seq is lower.
            restarted = event_seen(client, "restart")
            await client.emit("echo")
            await restarted.wait()
            assert client.positions == {"lobby": Position("e2", 1)}


async def test_a_join_ack_behind_a_room_event_does_not_move_the_position_back() -> None:
    async def script(peer: Peer) -> None:
        join = await peer.receive()
        assert isinstance(join, Join)
        await peer.send(RoomEvent("lobby", "chat", "first", "e1", 7), Ack(answer(join), ["e1", 6]))
        await hold(peer)

    with trio.fail_after(10):
        async with scripted(script) as url, eventbus.connect(url) as client:
            assert await client.join("lobby") == Position("e1", 6)
            assert client.positions == {"lobby": Position("e1", 7)}


async def test_a_rejoin_ack_behind_a_room_event_does_not_move_the_position_back() -> None:
    async def script(peer: Peer) -> None:
        join = await peer.receive()
        assert isinstance(join, Join)
        if peer.number == 1:
            await peer.send(Ack(answer(join), ["e1", 10]))
            await peer.receive()  # the client's "restart" emit
            await peer.ws.aclose(code=1001)  # going away: the client reconnects
            return
        await peer.send(RoomEvent("lobby", "chat", "first", "e2", 3), Ack(answer(join), ["e2", 2]))
        await hold(peer)

    with trio.fail_after(10):
        async with scripted(script) as url, eventbus.connect(url, reconnect=FAST) as client:
            reconnected = trio.Event()
            client.on_reconnect(reconnected.set)
            await client.join("lobby")
            assert client.positions == {"lobby": Position("e1", 10)}
            await client.emit("restart")
            await reconnected.wait()
            # The new connection's epoch replaced e1; seq 3, not the ACK's 2.
            assert client.positions == {"lobby": Position("e2", 3)}


async def test_an_unanswered_join_leaves_no_position_behind() -> None:
    async def script(peer: Peer) -> None:
        await peer.receive()
        # The server sends a room event, but never answers the JOIN.
        await peer.send(RoomEvent("lobby", "chat", "early", "e1", 1))
        await hold(peer)

    with trio.fail_after(10):
        async with scripted(script) as url, eventbus.connect(url) as client:
            early = event_seen(client, "chat")
            positions: list[Any] = []
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.join, "lobby")
                await early.wait()
                positions.append(client.positions)
                nursery.cancel_scope.cancel()
            assert positions == [{"lobby": Position("e1", 1)}]
            assert client.rooms == frozenset()
            assert client.positions == {}
