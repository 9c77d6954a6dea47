"""RESUME over real sockets, spoken raw (PROTOCOL.md section 9): what a client
missed comes back exactly once, in order, then live; or the verdict says why not."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio_websocket

import eventbus.testing
from eventbus import EventBus
from eventbus.protocol import Ack, ErrorReply, Event, Join, Publish, Resume, RoomEvent
from eventbus.protocol.packets import Position
from eventbus.server.sessions import Tokens

from .conftest import Raw, open_bus, raw_client, serving
from .test_metrics import scrape


def quick_bus(**settings: Any) -> EventBus:
    """An open bus without a rate limit: these tests publish hundreds at once."""
    settings.setdefault("rate", 0)
    return open_bus(**settings)


async def join(client: Raw, room: str, ack_id: int = 100) -> Position:
    await client.send(Join(room, ack_id))
    answer = await client.recv()
    assert isinstance(answer, Ack), answer
    assert answer.ack_id == ack_id
    return Position(*answer.data)


async def cut(client: Raw) -> None:
    """Drop the client's TCP connection without a close frame (a network failure)."""
    await trio.aclose_forcefully(client.ws._stream)


async def read_until_closed(client: Raw) -> None:
    while True:
        await client.recv()


async def publish_many(client: Raw, room: str, numbers: range, first_ack: int = 1000) -> None:
    for n in numbers:
        await client.send(Publish(room, "n", n, first_ack + n))
    for _ in numbers:
        answer = await client.recv()
        assert isinstance(answer, Ack), answer


async def resume(client: Raw, old: Raw, positions: dict[str, Position],
                 ack_id: int = 1) -> tuple[list[RoomEvent], Any, str]:
    """Send RESUME; collect the replayed room events, the ACK's verdicts and the fresh
    token the server sends first."""
    assert old.welcome is not None
    await client.send(Resume(old.sid, old.welcome.resume_token, positions, ack_id))
    token = await client.recv()
    assert isinstance(token, Event), token
    assert token.event == "$resume_token"
    events: list[RoomEvent] = []
    while True:
        packet = await client.recv()
        if isinstance(packet, RoomEvent):
            events.append(packet)
            continue
        assert isinstance(packet, Ack), packet
        assert packet.ack_id == ack_id
        return events, packet.data, token.data


@asynccontextmanager
async def bus_on(bus: EventBus) -> AsyncIterator[int]:
    async with serving(bus) as port:
        yield port


async def test_a_dropped_subscriber_gets_exactly_the_100_it_missed_then_live_ones() -> None:
    with trio.fail_after(20):
        async with bus_on(quick_bus()) as port, raw_client(port) as pub:
            async with raw_client(port) as sub:
                start = await join(sub, "news")
                assert start.seq == 0  # nothing seen yet: resume from the very first
                await cut(sub)
            await publish_many(pub, "news", range(100))
            async with raw_client(port, "msgpack") as again:
                events, verdicts, _ = await resume(again, sub, {"news": start})
                assert [e.data for e in events] == list(range(100))
                assert [e.seq for e in events] == list(range(1, 101))
                assert verdicts == {"news": {"recovered": True, "replayed": 100,
                                             "position": [start.epoch, 100]}}
                await pub.send(Publish("news", "n", 100, 1))
                assert isinstance(await pub.recv(), Ack)
                live = await again.recv()
                assert isinstance(live, RoomEvent)
                assert (live.data, live.seq) == (100, 101)
                await again.recv_nothing()


async def test_publishes_during_the_replay_arrive_once_in_order_at_the_seam() -> None:
    bus = quick_bus(send_queue_size=8)
    with trio.fail_after(20):
        async with bus_on(bus) as port, raw_client(port) as pub:
            async with raw_client(port) as sub:
                start = await join(sub, "r")
                await cut(sub)
            await publish_many(pub, "r", range(600))
            async with raw_client(port) as again:
                assert again.welcome is not None
                assert sub.welcome is not None
                await again.send(Resume(sub.sid, sub.welcome.resume_token, {"r": start}, 1))
                # More messages while the replay goes out (the pub sends without acks).
                for n in range(600, 700):
                    await pub.send(Publish("r", "n", n))
                seen: list[int] = []
                verdict = None
                while len(seen) < 700:
                    packet = await again.recv()
                    if isinstance(packet, RoomEvent):
                        seen.append(packet.seq)
                    elif isinstance(packet, Ack):
                        verdict = packet.data["r"]
                assert seen == list(range(1, 701)), "no gap, no repeat at the seam"
                assert verdict is not None
                assert verdict["recovered"] is True
                await again.recv_nothing()


async def test_resume_after_the_history_window_is_not_recovered() -> None:
    with trio.fail_after(20):
        async with bus_on(quick_bus(history_size=10)) as port, raw_client(port) as pub:
            async with raw_client(port) as sub:
                start = await join(sub, "r")
                await cut(sub)
            await publish_many(pub, "r", range(25))
            async with raw_client(port) as again:
                events, verdicts, _ = await resume(again, sub, {"r": start})
                assert events == []  # never a part of what was missed
                assert verdicts == {"r": {"recovered": False, "reason": "window_exceeded",
                                          "position": [start.epoch, 25]}}
                await pub.send(Publish("r", "n", 25, 1))
                assert isinstance(await pub.recv(), Ack)
                live = await again.recv()
                assert isinstance(live, RoomEvent)
                assert live.seq == 26


async def test_too_far_behind_history_off_forbidden_and_unknown_epoch() -> None:
    bus = quick_bus(max_replay=5, history_rooms=["volatile.*=off"])

    @bus.authorize_join
    def only_some(sock: Any, room: str) -> bool:
        return room != "secret" or not sock.rooms & {"news", "volatile.x"}

    with trio.fail_after(20):
        async with bus_on(bus) as port, raw_client(port) as pub:
            async with raw_client(port) as sub:
                news = await join(sub, "news")
                await cut(sub)
            await publish_many(pub, "news", range(6))
            async with raw_client(port) as again:
                _, verdicts, _ = await resume(again, sub, {
                    "news": news, "volatile.x": Position("e", 3), "secret": Position("e", 0),
                    "other": Position("not-its-epoch", 1)})
                other = verdicts["other"]
                assert verdicts == {
                    "news": {"recovered": False, "reason": "too_far_behind",
                             "position": [news.epoch, 6]},
                    "volatile.x": {"recovered": False, "reason": "history_off",
                                   "position": verdicts["volatile.x"]["position"]},
                    "secret": {"recovered": False, "reason": "forbidden"},
                    "other": {"recovered": False, "reason": "epoch_changed",
                              "position": other["position"]},
                }
                assert other["position"][0] != "not-its-epoch"
                assert set(bus.connections[again.sid].rooms) == {"news", "volatile.x", "other"}


async def test_the_session_keeps_except_sender_across_two_resumes() -> None:
    with trio.fail_after(20):
        async with bus_on(quick_bus()) as port, raw_client(port) as other:
            async with raw_client(port) as first:
                start = await join(first, "chat")
                await first.send(Publish("chat", "mine", 1, 2))
                mine = await first.recv()
                assert isinstance(mine, Ack)
                await cut(first)
            await publish_many(other, "chat", range(2))
            async with raw_client(port) as second:
                events, verdicts, token = await resume(second, first, {"chat": start})
                assert [(e.event, e.data) for e in events] == [("n", 0), ("n", 1)]
                assert verdicts["chat"]["replayed"] == 2
                await second.send(Publish("chat", "mine", 2, 3))
                assert isinstance(await second.recv(), Ack)
                position = Position(*verdicts["chat"]["position"])
                await cut(second)
            await publish_many(other, "chat", range(2, 3))
            async with raw_client(port) as third:
                assert second.welcome is not None
                # The token to use now is the one the second connection was sent.
                second.welcome = type(second.welcome)(second.sid, token, second.welcome.options)
                events, verdicts, _ = await resume(third, second, {"chat": start})
                # From the very start: all the others' messages, none of the session's
                # own (published by the first and by the second connection).
                assert [(e.event, e.data) for e in events] == [("n", 0), ("n", 1), ("n", 2)]
                assert verdicts["chat"] == {"recovered": True, "replayed": 3,
                                            "position": [position.epoch, 5]}


async def test_a_publish_whose_ack_was_lost_applies_once_after_the_resume() -> None:
    with trio.fail_after(20):
        async with bus_on(quick_bus()) as port, raw_client(port) as member:
            await join(member, "orders")
            async with raw_client(port) as client:
                await client.send(Publish("orders", "buy", {"qty": 1}, 1, publish_id=7))
                # The message arrives; the publisher's connection breaks before it
                # reads its ACK.
                arrived = await member.recv()
                assert isinstance(arrived, RoomEvent)
                assert arrived.seq == 1
                await cut(client)
            async with raw_client(port) as again:
                _, verdicts, _ = await resume(again, client, {})
                assert verdicts == {}
                await again.send(Publish("orders", "buy", {"qty": 1}, 2, publish_id=7))
                assert await again.recv() == Ack(2, [arrived.epoch, 1]), "the first's position"
                await again.send(Publish("orders", "buy", {"qty": 2}, 3, publish_id=8))
                assert await again.recv() == Ack(3, [arrived.epoch, 2])
            second = await member.recv()
            assert isinstance(second, RoomEvent)
            assert (second.seq, second.data) == (2, {"qty": 2})
            await member.recv_nothing()


async def test_a_replay_longer_than_the_send_queue_never_closes_a_reader() -> None:
    bus = quick_bus(send_queue_size=16, send_queue_bytes=256 * 1024, history_bytes=64 << 20)
    blob = "x" * 60_000
    with trio.fail_after(30):
        async with bus_on(bus) as port, raw_client(port) as pub:
            async with raw_client(port) as sub:
                start = await join(sub, "big")
                await cut(sub)
            for n in range(200):
                await pub.send(Publish("big", "n", [n, blob], 10 + n))
                assert isinstance(await pub.recv(), Ack)
            async with raw_client(port) as again:
                assert sub.welcome is not None
                await again.send(Resume(sub.sid, sub.welcome.resume_token, {"big": start}, 1))
                # A slow reader: 12 MB waits for it, far more than its queue holds.
                await trio.sleep(0.5)
                conn = bus.connections[again.sid]
                assert conn.statistics()["queued_bytes"] <= 256 * 1024 + 70_000
                received = []
                while True:
                    packet = await again.recv()
                    if isinstance(packet, RoomEvent):
                        received.append(packet.data[0])
                    elif isinstance(packet, Ack):
                        break
                assert received == list(range(200))
                assert packet.data["big"]["replayed"] == 200
                assert not conn.closed


async def test_a_still_open_old_connection_is_closed_with_4004() -> None:
    with trio.fail_after(20):
        async with bus_on(quick_bus()) as port, raw_client(port) as old:
            start = await join(old, "r")
            async with raw_client(port) as new:
                _, verdicts, _ = await resume(new, old, {"r": start})
                assert verdicts["r"]["recovered"] is True
                with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                    await old.recv()
                assert closed.value.reason.code == 4004


@pytest.mark.parametrize("case", ["wrong token", "another sid", "not first", "expired",
                                  "its own"])
async def test_bad_resumes_are_refused_and_join_nothing(case: str) -> None:
    bus = quick_bus()
    with trio.fail_after(20):
        async with bus_on(bus) as port, raw_client(port) as victim, raw_client(port) as other:
            assert victim.welcome is not None
            assert other.welcome is not None
            start = await join(victim, "r")
            async with raw_client(port) as attacker:
                token = victim.welcome.resume_token
                sid = victim.sid
                if case == "wrong token":
                    token = token[:-4] + ("AAAA" if token[-4:] != "AAAA" else "BBBB")
                elif case == "another sid":
                    sid = other.sid
                elif case == "not first":
                    await join(attacker, "elsewhere", 50)
                elif case == "its own":
                    assert attacker.welcome is not None
                    sid, token = attacker.sid, attacker.welcome.resume_token
                else:
                    recovery = bus._recovery
                    old = Tokens(1.0).issue(victim.sid, victim.sid, 1_000_000.0,
                                            recovery._secrets()[0])
                    token = old
                await attacker.send(Resume(sid, token, {"r": start}, 9))
                answer = await attacker.recv()
                assert isinstance(answer, ErrorReply)
                assert (answer.ack_id, answer.code) == (9, "resume_failed")
                assert "r" not in bus.connections[attacker.sid].rooms
            # The victim is untouched: still open, still in its room.
            assert not bus.connections[victim.sid].closed
            assert "r" in bus.connections[victim.sid].rooms


@pytest.mark.parametrize("same_secret", [True, False])
async def test_resume_after_a_restart_of_the_in_memory_bus(same_secret: bool) -> None:
    with trio.fail_after(20):
        async with bus_on(quick_bus(secret="s3cret")) as port, raw_client(port) as sub:
            start = await join(sub, "r")
        secret = "s3cret" if same_secret else None
        async with bus_on(quick_bus(secret=secret)) as port, raw_client(port) as again:
            assert sub.welcome is not None
            await again.send(Resume(sub.sid, sub.welcome.resume_token, {"r": start}, 1))
            if not same_secret:
                answer = await again.recv()
                assert isinstance(answer, ErrorReply)
                assert answer.code == "resume_failed"
                return
            assert isinstance(await again.recv(), Event)  # its fresh token
            answer = await again.recv()
            assert isinstance(answer, Ack)
            verdict = answer.data["r"]
            assert (verdict["recovered"], verdict["reason"]) == (False, "epoch_changed")
            assert verdict["position"][0] != start.epoch


async def test_tokens_expire_and_are_bound_to_their_sid_and_secret() -> None:
    tokens = Tokens(100.0)
    token = tokens.issue("sid1", "sess1", 5_000.0, b"k")
    assert len(token) <= 64
    assert tokens.verify("sid1", token, 5_050.0, [b"k"]) == "sess1"
    assert tokens.verify("sid1", token, 5_050.0, [b"other", b"k"]) == "sess1"
    assert tokens.verify("sid1", token, 5_101.0, [b"k"]) is None, "expired"
    assert tokens.verify("sid2", token, 5_050.0, [b"k"]) is None, "another sid"
    assert tokens.verify("sid1", token, 5_050.0, [b"other"]) is None, "another secret"
    assert tokens.verify("sid1", "x" * 40, 5_050.0, [b"k"]) is None
    assert tokens.verify("sid1", "short", 5_050.0, [b"k"]) is None
    assert tokens.issued_at(token) == 5_000
    with pytest.raises(ValueError, match="session id"):
        tokens.issue("s", "x" * 40, 0.0, b"k")


async def test_connections_get_a_fresh_token_before_theirs_expires(
        autojump_clock: trio.abc.Clock) -> None:
    # No ping in the test's time: the refresh is the only event the client gets.
    bus = quick_bus(resume_ttl=100.0, ping_interval=120.0, ping_timeout=120.0)
    async with bus.running(), eventbus.testing.connect(bus):
        conn = next(iter(bus.connections.values()))
        due = conn.token_refresh
        assert due == pytest.approx(trio.current_time() + 50, abs=1)
        sent = bus.metrics.sent["json"][Event] if bus.metrics else 0
        await trio.sleep(70)
        # Refreshed at the heartbeat's first tick past the due time (ticks: 30 s).
        assert due + 50 <= conn.token_refresh <= due + 50 + 30
        assert bus.metrics is not None
        assert bus.metrics.sent["json"][Event] == sent + 1
        recovery = bus._recovery
        assert recovery._tokens.verify(conn.sid, conn.resume_token, time.time(),
                                       recovery._secrets()) == conn.session


async def test_metrics_count_resumes_by_verdict_and_replayed_messages() -> None:
    with trio.fail_after(20):
        async with bus_on(quick_bus(history_rooms=["volatile.*=off"])) as port, \
                raw_client(port) as pub:
            async with raw_client(port) as sub:
                start = await join(sub, "r")
                await cut(sub)
            await publish_many(pub, "r", range(7))
            async with raw_client(port) as again:
                _, verdicts, _ = await resume(again, sub, {
                    "r": start, "volatile.x": Position("e", 0)})
                assert verdicts["r"]["replayed"] == 7
            async with raw_client(port) as refused:
                await refused.send(Resume(sub.sid, "wrong" * 8, {}, 3))
                assert isinstance(await refused.recv(), ErrorReply)
            found = await scrape(port)
            assert found[("eventbus_resumed_rooms_total", (("verdict", "recovered"),))] == 1
            assert found[("eventbus_resumed_rooms_total", (("verdict", "history_off"),))] == 1
            assert found[("eventbus_resumed_rooms_total", (("verdict", "resume_failed"),))] == 1
            assert found[("eventbus_replayed_messages_total", ())] == 7


async def test_messages_that_arrive_while_a_replay_waits_on_the_client_follow_it() -> None:
    bus = quick_bus(send_queue_size=16, send_queue_bytes=256 * 1024, history_bytes=64 << 20)
    blob = "x" * 60_000
    with trio.fail_after(30):
        async with bus_on(bus) as port, raw_client(port) as pub:
            async with raw_client(port) as sub:
                start = await join(sub, "big")
                await cut(sub)
            for n in range(100):
                await pub.send(Publish("big", "n", [n, blob], 10 + n))
                assert isinstance(await pub.recv(), Ack)
            async with raw_client(port) as again:
                assert sub.welcome is not None
                await again.send(Resume(sub.sid, sub.welcome.resume_token, {"big": start}, 1))
                await trio.sleep(0.3)  # the replay now waits for the client to read
                for n in range(100, 110):
                    bus.emit("n", [n, "small"], to="big")
                received = []
                while True:
                    packet = await again.recv()
                    if isinstance(packet, RoomEvent):
                        received.append(packet.data[0])
                    elif isinstance(packet, Ack):
                        break
                assert received == list(range(110)), "the later ones read on from history"
                assert packet.data["big"] == {"recovered": True, "replayed": 110,
                                              "position": [start.epoch, 110]}
                await again.recv_nothing()


async def test_a_room_that_outruns_its_replay_closes_the_client_with_4001(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from eventbus.server import recovery

    monkeypatch.setattr(recovery, "PAGE", 4)  # the cap is checked after each full page
    bus = quick_bus(send_queue_size=16, send_queue_bytes=256 * 1024, history_bytes=64 << 20,
                    max_replay=20)
    blob = "x" * 60_000
    with trio.fail_after(30):
        async with bus_on(bus) as port, raw_client(port) as pub:
            async with raw_client(port) as sub:
                start = await join(sub, "fast")
                await cut(sub)
            for n in range(20):
                await pub.send(Publish("fast", "n", [n, blob], 10 + n))
                assert isinstance(await pub.recv(), Ack)
            async with raw_client(port) as again:
                assert sub.welcome is not None
                await again.send(Resume(sub.sid, sub.welcome.resume_token, {"fast": start}, 1))
                await trio.sleep(0.3)
                for n in range(20, 80):  # far more than the replay may chase
                    bus.emit("n", [n, "small"], to="fast")
                with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                    await read_until_closed(again)
                assert closed.value.reason.code == 4001


@pytest.mark.parametrize("change", ["epoch", "window"])
async def test_history_that_changes_under_a_replay_stops_it_with_the_reason(
        change: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from eventbus.adapters import HistoryPage
    from eventbus.server import recovery

    monkeypatch.setattr(recovery, "PAGE", 4)  # several pages for a few messages
    bus = quick_bus()
    real = bus.adapter.history
    calls = 0

    async def history(room: str, epoch: str, after: int, limit: int, bounds: Any) -> Any:
        nonlocal calls
        calls += 1
        page = await real(room, epoch, after, limit, bounds)
        if calls == 2:  # the second page: Redis lost the room, or trimmed it meanwhile
            if change == "epoch":
                return HistoryPage(Position("new-epoch", 1), 1, [])
            return HistoryPage(page.position, page.position.seq, [])
        return page

    monkeypatch.setattr(bus.adapter, "history", history)
    with trio.fail_after(20):
        async with bus_on(bus) as port, raw_client(port) as pub:
            async with raw_client(port) as sub:
                start = await join(sub, "r")
                await cut(sub)
            await publish_many(pub, "r", range(10))
            async with raw_client(port) as again:
                events, verdicts, _ = await resume(again, sub, {"r": start})
                assert [e.seq for e in events] == [1, 2, 3, 4], "the first page went out"
                reason = "epoch_changed" if change == "epoch" else "window_exceeded"
                assert verdicts["r"]["recovered"] is False
                assert verdicts["r"]["reason"] == reason


async def test_a_replay_to_a_client_that_goes_away_stops() -> None:
    bus = quick_bus(send_queue_size=16, send_queue_bytes=256 * 1024, history_bytes=64 << 20)
    blob = "x" * 60_000
    with trio.fail_after(30):
        async with bus_on(bus) as port, raw_client(port) as pub:
            async with raw_client(port) as sub:
                start = await join(sub, "big")
                await cut(sub)
            for n in range(100):
                await pub.send(Publish("big", "n", [n, blob], 10 + n))
                assert isinstance(await pub.recv(), Ack)
            async with raw_client(port) as again:
                assert sub.welcome is not None
                await again.send(Resume(sub.sid, sub.welcome.resume_token, {
                    "big": start, "later": Position("e", 0)}, 1))
                await trio.sleep(0.3)
                conn = bus.connections[again.sid]
                conn._abort(1006, "gone", by_server=False)  # the client went away
                with pytest.raises(trio_websocket.ConnectionClosed):
                    await read_until_closed(again)  # what was on its way, then the end
            with trio.fail_after(5):
                while again.sid in bus.connections:  # noqa: ASYNC110
                    await trio.sleep(0.01)
            assert "later" not in conn.rooms, "the rooms after it were not joined"


async def test_unavailable_history_rooms_over_the_limit_and_metrics_off() -> None:
    from eventbus.errors import Unavailable

    bus = quick_bus(max_rooms=1, metrics=False)
    real = bus.adapter.history

    async def history(room: str, *args: Any) -> Any:
        if room == "r":
            raise Unavailable("the bus cannot reach its other nodes now")
        return await real(room, *args)

    with trio.fail_after(20):
        async with bus_on(bus) as port:
            async with raw_client(port) as sub:
                start = await join(sub, "r")
                await cut(sub)
            bus.adapter.history = history  # type: ignore[method-assign]
            async with raw_client(port) as again:
                _, verdicts, _ = await resume(again, sub, {
                    "r": start, "s": Position("e", 0), "t": Position("e", 0)})
                assert verdicts["r"] == {"recovered": False, "reason": "unavailable"}
                assert verdicts["s"]["reason"] == "epoch_changed"
                assert verdicts["t"] == {"recovered": False, "reason": "too_many_rooms"}
                assert bus.connections[again.sid].rooms == {"s"}, "not left half in r"
            async with raw_client(port) as refused:
                await refused.send(Resume(sub.sid, "x" * 40, {}, 2))
                answer = await refused.recv()
                assert isinstance(answer, ErrorReply)


@pytest.mark.parametrize("case", ["delivered-meanwhile", "new-epoch-meanwhile",
                                  "unreadable-history"])
async def test_what_the_node_delivers_while_a_resume_reads_history_is_not_lost(
        case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from eventbus.adapters import HistoryPage

    bus = quick_bus(history_size=3 if case == "delivered-meanwhile" else 1000)
    real = bus.adapter.history
    calls = 0

    async def history(room: str, epoch: str, after: int, limit: int, bounds: Any) -> Any:
        nonlocal calls
        calls += 1
        page = await real(room, epoch, after, limit, bounds)
        if calls == 1:
            local = bus._router.rooms.get(room)
            assert local is not None
            if case == "delivered-meanwhile":
                # A message the node delivers while the reply is on its way (Redis:
                # two connections): the waiting member skips it.
                bus.emit("n", "meanwhile", to=room)
            elif case == "new-epoch-meanwhile":
                local.position = Position("new-epoch", 1)  # Redis lost the room
            else:
                local.position = Position(page.position.epoch, page.position.seq + 5)
                return HistoryPage(page.position, page.first, [])
        elif case == "unreadable-history":
            return HistoryPage(page.position, page.first, [])
        return page

    monkeypatch.setattr(bus.adapter, "history", history)
    with trio.fail_after(20):
        async with bus_on(bus) as port, raw_client(port) as pub:
            async with raw_client(port) as sub:
                start = await join(sub, "r")
                await cut(sub)
            await publish_many(pub, "r", range(5 if case == "delivered-meanwhile" else 0))
            async with raw_client(port) as again:
                _, verdicts, _ = await resume(again, sub, {"r": start})
                verdict = verdicts["r"]
                assert verdict["recovered"] is False
                if case == "delivered-meanwhile":
                    # Told where it stands: after the one it did not get.
                    assert verdict["reason"] == "window_exceeded"
                    assert verdict["position"] == [start.epoch, 6]
                    await pub.send(Publish("r", "n", "after", 1))
                    assert isinstance(await pub.recv(), Ack)
                    live = await again.recv()
                    assert isinstance(live, RoomEvent)
                    assert live.seq == 7
                elif case == "new-epoch-meanwhile":
                    assert verdict == {"recovered": False, "reason": "epoch_changed",
                                       "position": ["new-epoch", 1]}
                else:
                    assert verdict["reason"] == "window_exceeded", "no endless re-reading"
