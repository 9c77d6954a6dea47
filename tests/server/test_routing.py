"""Rooms and broadcast-except-sender over real sockets."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from eventbus import Connection, ConnectionClosed, EventBus
from eventbus.protocol import Ack, Emit, ErrorReply, Event, Join, Leave, Publish, RoomEvent

from .conftest import open_bus, raw_client, serving


async def join(client: Any, room: str, ack_id: int = 100) -> Ack:
    await client.send(Join(room, ack_id))
    answer = await client.recv()
    assert isinstance(answer, Ack)
    assert answer.ack_id == ack_id
    return answer


async def test_publish_reaches_every_other_member_once_in_order() -> None:
    with trio.fail_after(10):
        async with serving(open_bus()) as port, raw_client(port) as a, \
                raw_client(port) as b, raw_client(port, "msgpack") as c:
            for client in (a, b, c):
                await join(client, "lobby")
            for n in range(20):
                await a.send(Publish("lobby", "chat", {"n": n}, ack_id=n + 1))
            seqs = []
            for n in range(20):
                ack = await a.recv()
                assert ack == Ack(n + 1, [ack.data[0], n + 1])
                seqs.append(ack.data[1])
            for member in (b, c):
                for n in range(20):
                    event = await member.recv()
                    assert isinstance(event, RoomEvent)
                    assert (event.room, event.event, event.data) == ("lobby", "chat", {"n": n})
                    assert event.seq == seqs[n]
            # Once each: nothing more, and the sender never got its own messages.
            for client in (a, b, c):
                await client.recv_nothing()


async def test_server_broadcast_with_skip() -> None:
    bus = open_bus()
    with trio.fail_after(10):
        async with serving(bus) as port, raw_client(port) as a, raw_client(port) as b, \
                raw_client(port) as c:
            for client in (a, b, c):
                await join(client, "r")
            sent = bus.emit("news", [1, 2], to="r", skip=bus.connections[a.sid])
            assert sent == 2
            for member in (b, c):
                event = await member.recv()
                assert isinstance(event, RoomEvent)
                assert (event.event, event.data, event.seq) == ("news", [1, 2], 1)
            await a.recv_nothing()
            # sock.broadcast is the same thing from a handler's point of view
            assert bus.connections[b.sid].broadcast("hi", None, to="r") == 2
            for member in (a, c):
                event = await member.recv()
                assert isinstance(event, RoomEvent)
                assert (event.event, event.seq) == ("hi", 2)
            await b.recv_nothing()


async def test_leave_stops_delivery_and_join_reports_position() -> None:
    with trio.fail_after(10):
        bus = open_bus(history_rooms=["volatile.*=off"])
        async with serving(bus) as port, raw_client(port) as a, raw_client(port) as b:
            first = await join(a, "r")
            assert first.data[1] == 0
            await join(b, "r")
            await b.send(Publish("r", "x", 1, 5))
            assert await b.recv() == Ack(5, [first.data[0], 1])
            assert isinstance(await a.recv(), RoomEvent)
            await a.send(Leave("r", 6))
            assert await a.recv() == Ack(6, None)
            await b.send(Publish("r", "x", 2, 7))
            assert await b.recv() == Ack(7, [first.data[0], 2])
            await a.recv_nothing()
            # A room without members keeps the message in its history: it takes seq 1.
            await a.send(Publish("empty", "x", 3, 10))
            kept = await a.recv()
            assert isinstance(kept, Ack)
            assert kept.data[1] == 1
            # A room without members nor history: the message reaches nobody.
            await a.send(Publish("volatile.x", "x", 3, 11))
            assert await a.recv() == Ack(11, None)
            # Leaving a room one is not in is fine; joining twice is fine.
            await a.send(Leave("nowhere", 8))
            assert await a.recv() == Ack(8, None)
            again = await join(b, "r", 9)
            assert again.data[1] == 2


async def test_rooms_closed_by_default_and_hooks_decide() -> None:
    bus = EventBus()
    with trio.fail_after(10):
        async with serving(bus) as port, raw_client(port) as a:
            await a.send(Join("r", 1))
            refused = await a.recv()
            assert isinstance(refused, ErrorReply)
            assert (refused.ack_id, refused.code) == (1, "forbidden")
            await a.send(Publish("r", "x", None, 2))
            refused = await a.recv()
            assert isinstance(refused, ErrorReply)
            assert (refused.ack_id, refused.code) == (2, "forbidden")

    hooked = EventBus()
    seen: list[tuple[str, str]] = []

    @hooked.authorize_join
    def may_join(sock: Connection, room: str) -> bool:
        seen.append((sock.sid, room))
        return room.startswith("public.")

    @hooked.authorize_publish
    async def may_publish(sock: Connection, room: str, event: str) -> bool:
        await trio.lowlevel.checkpoint()
        return event == "say"

    with trio.fail_after(10):
        async with serving(hooked) as port, raw_client(port) as a, raw_client(port) as b:
            await join(a, "public.1")
            await join(b, "public.1")
            await a.send(Join("private", 2))
            assert (await a.recv()) == ErrorReply(2, "forbidden", "not allowed for room 'private'")
            await a.send(Publish("public.1", "shout", 1, 3))
            denied = await a.recv()
            assert isinstance(denied, ErrorReply)
            assert denied.code == "forbidden"
            await a.send(Publish("public.1", "say", 1, 4))
            assert isinstance(await a.recv(), Ack)
            assert isinstance(await b.recv(), RoomEvent)
            assert seen[0] == (a.sid, "public.1")


async def test_json_and_msgpack_members_both_receive_and_binary_is_refused_to_json() -> None:
    bus = open_bus()
    with trio.fail_after(10):
        async with serving(bus) as port, raw_client(port) as j, \
                raw_client(port, "msgpack") as m, raw_client(port, "msgpack") as sender:
            for client in (j, m, sender):
                await join(client, "mixed")
            await sender.send(Publish("mixed", "text", {"k": "v"}))
            assert (await j.recv()).data == {"k": "v"}  # type: ignore[union-attr]
            assert (await m.recv()).data == {"k": "v"}  # type: ignore[union-attr]
            await sender.send(Publish("mixed", "blob", b"\x00\xff"))
            got = await m.recv()
            assert isinstance(got, RoomEvent)
            assert got.data == b"\x00\xff"
            note = await j.recv()
            assert isinstance(note, ErrorReply)
            assert note.ack_id is None
            assert note.code == "unencodable"
            assert "'blob'" in note.message
            assert "'mixed'" in note.message


async def test_emit_to_sid_and_to_everyone() -> None:
    bus = open_bus()
    with trio.fail_after(10):
        async with serving(bus) as port, raw_client(port) as a, raw_client(port, "msgpack") as b:
            assert bus.emit("hello", {"to": "a"}, to_sid=a.sid) == 1
            assert await a.recv() == Event("hello", {"to": "a"})
            await b.recv_nothing()
            assert bus.emit("all", 1) == 2
            assert await a.recv() == Event("all", 1)
            assert await b.recv() == Event("all", 1)
            assert bus.emit("nobody", 1, to="empty-room") == 0
            assert bus.emit("nobody", 1, to_sid="no-such-sid") == 0


async def test_a_room_named_like_a_sid_is_still_a_room() -> None:
    # Sids are public: a client that joins a room named after another client's sid
    # must not redirect the app's broadcast to that room into that one connection.
    bus = open_bus()
    with trio.fail_after(10):
        async with serving(bus) as port, raw_client(port) as victim, \
                raw_client(port) as member:
            await join(member, victim.sid)
            for call in (lambda: bus.emit("news", 1, to=victim.sid),
                         lambda: bus.emit("news", 1, to_room=victim.sid)):
                assert call() == 1
                packet = await member.recv()
                assert isinstance(packet, RoomEvent)
                assert (packet.room, packet.event) == (victim.sid, "news")
            await victim.recv_nothing()
            results = await bus.call("q", None, to=victim.sid, timeout=0.2)
            assert set(results.timed_out) == {member.sid}
            with pytest.raises(TypeError):
                bus.emit("news", 1, to="r", to_sid=victim.sid)
            with pytest.raises(TypeError):
                await bus.call("q", None)
            missing = await bus.call("q", None, to_sid="gone")
            assert isinstance(missing.errors["gone"], ConnectionClosed)


async def test_events_from_one_connection_are_handled_in_order() -> None:
    bus = open_bus()
    log: list[int] = []

    @bus.on("step")
    async def step(sock: Connection, n: int) -> int:
        # Later steps are quicker: only sequential handling keeps the order.
        await trio.sleep(0.001 * (10 - n))
        log.append(n)
        return n

    with trio.fail_after(10):
        async with serving(bus) as port, raw_client(port) as a, raw_client(port) as b:
            await join(b, "r")
            for n in range(10):
                await a.send(Emit("step", n, n + 1))
                await a.send(Publish("r", "after-step", n))
            answers = [await a.recv() for _ in range(10)]
            assert [x.ack_id for x in answers] == list(range(1, 11))  # type: ignore[union-attr]
            assert log == list(range(10))
            got = [await b.recv() for _ in range(10)]
            assert [x.data for x in got] == list(range(10))  # type: ignore[union-attr]



async def test_on_disconnect_still_sees_the_rooms_it_left() -> None:
    bus = open_bus()
    seen: list[tuple[set[str], list[Connection]]] = []
    done = trio.Event()

    @bus.on_disconnect
    async def gone(sock: Connection, disconnect: Any) -> None:
        seen.append((set(sock.rooms), bus.members("r")))
        done.set()

    with trio.fail_after(10):
        async with serving(bus) as port, raw_client(port) as stays:
            await join(stays, "r")
            async with raw_client(port) as leaves:
                await join(leaves, "r")
            await done.wait()
            assert seen == [({"r"}, [bus.connections[stays.sid]])]
            # Nothing reaches the closed connection, and the room goes on.
            assert bus.emit("after", 1, to="r") == 1
