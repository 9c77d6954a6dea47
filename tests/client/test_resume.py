"""The client resumes by itself after a reconnect, against a real server on
127.0.0.1: what it missed arrives once, in order, then live ones; the app learns each
room's verdict; publishes made offline, or whose answer was lost, apply once."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import trio

import eventbus
import eventbus.testing
from eventbus import Backoff, Connection, Recovery
from eventbus.server import recovery as recovery_module

from .conftest import make_bus, serving

FAST = Backoff(initial=0.01, cap=0.05)


class Gate:
    """Holds new connections at the handshake while closed (an ``authenticate``
    hook), so that what is published meanwhile is surely missed."""

    def __init__(self, bus: eventbus.EventBus) -> None:
        self.opened = trio.Event()
        self.opened.set()
        self.waiting = 0
        bus.authenticate(self._wait)

    async def _wait(self, request: Any) -> dict[str, Any]:
        self.waiting += 1
        await self.opened.wait()
        return {}

    def close(self) -> None:
        self.opened = trio.Event()
        self.waiting = 0

    async def until_waiting(self) -> None:
        with trio.fail_after(5):
            while not self.waiting:  # noqa: ASYNC110 - the client's reconnect arrives
                await trio.sleep(0.01)


def cut(bus: eventbus.EventBus, sid: str | None) -> None:
    """Drop a client's TCP connection from the server's side, without a close frame."""
    assert sid is not None
    bus.connections[sid]._abort(1006, "cut", by_server=False)


async def test_a_cut_subscriber_gets_exactly_what_it_missed_then_live_ones() -> None:
    bus = make_bus(rate=0)
    gate = Gate(bus)
    with trio.fail_after(20):
        async with serving(bus) as server, eventbus.connect(server.url) as pub, \
                eventbus.connect(server.url, reconnect=FAST) as sub:
            verdicts: list[dict[str, Recovery]] = []
            resumed = trio.Event()

            @sub.on_resume
            def on_resume(recoveries: dict[str, Recovery]) -> None:
                verdicts.append(dict(recoveries))
                resumed.set()

            async with sub.subscribe("news") as events:
                await pub.publish("news", "n", -1)
                assert (await events.__anext__()).data == -1
                gate.close()
                cut(bus, sub.sid)
                await gate.until_waiting()
                for n in range(100):
                    await pub.publish("news", "n", n)
                gate.opened.set()
                await resumed.wait()
                await pub.publish("news", "n", 100)
                got = [await events.__anext__() for _ in range(101)]
                assert [e.data for e in got] == list(range(101))
                seqs = [e.seq for e in got]
                assert seqs == list(range(seqs[0], seqs[0] + 101))
                [recoveries] = verdicts
                recovery = recoveries["news"]
                assert (recovery.recovered, recovery.replayed, recovery.reason) == (True, 100, None)
                assert sub.statistics()["duplicates"] == 0
                with trio.move_on_after(0.2):
                    extra = await events.__anext__()
                    raise AssertionError(f"unexpected {extra}")


async def test_publishes_made_offline_arrive_after_the_reconnect_once_each() -> None:
    bus = make_bus(rate=0)
    gate = Gate(bus)
    with trio.fail_after(20):
        async with serving(bus) as server, eventbus.connect(server.url) as sub, \
                eventbus.connect(server.url, reconnect=FAST) as pub, \
                sub.subscribe("orders") as events:
            await pub.join("orders")
            gate.close()
            cut(bus, pub.sid)
            await gate.until_waiting()
            assert not pub.connected
            positions: list[Any] = []
            async with trio.open_nursery() as nursery:
                for n in range(5):
                    async def send(n: int = n) -> None:
                        positions.append(await pub.publish("orders", "buy", n))
                    nursery.start_soon(send)
                await trio.sleep(0.1)
                assert positions == [], "held while offline"
                gate.opened.set()
            got = sorted([(await events.__anext__()).data for _ in range(5)])
            assert got == list(range(5))
            assert len({p.seq for p in positions}) == 5
            with trio.move_on_after(0.2):
                extra = await events.__anext__()
                raise AssertionError(f"unexpected {extra}")


async def test_a_publish_whose_answer_was_lost_is_applied_once() -> None:
    bus = make_bus(rate=0)
    lost_once: list[str] = []

    @bus.authorize_publish
    def cut_before_the_answer(sock: Connection, room: str, event: str) -> bool:
        if event == "pay" and not lost_once:
            # The message is applied after this hook; its answer goes to a closed
            # connection: the client sees the connection drop, not the ACK.
            lost_once.append(sock.sid)
            sock._abort(1006, "cut", by_server=False)
        return True

    with trio.fail_after(20):
        async with serving(bus) as server, eventbus.connect(server.url) as sub, \
                eventbus.connect(server.url, reconnect=FAST) as pub, \
                sub.subscribe("ledger") as events:
            position = await pub.publish("ledger", "pay", {"amount": 10})
            assert lost_once, "the first answer was lost"
            first = await events.__anext__()
            assert first.position == position, "the retry got the first one's position"
            await pub.publish("ledger", "note", "after")
            second = await events.__anext__()
            assert (second.event, second.data) == ("note", "after"), "paid once only"


async def test_a_room_beyond_its_history_window_is_reported_not_recovered() -> None:
    bus = make_bus(rate=0, history_size=5)
    gate = Gate(bus)
    with trio.fail_after(20):
        async with serving(bus) as server, eventbus.connect(server.url) as pub, \
                eventbus.connect(server.url, reconnect=FAST) as sub:
            seen: list[dict[str, Recovery]] = []
            resumed = trio.Event()
            sub.on_resume(lambda recoveries: (seen.append(dict(recoveries)), resumed.set()))
            await sub.join("chat")
            gate.close()
            cut(bus, sub.sid)
            await gate.until_waiting()
            for n in range(10):
                await pub.publish("chat", "m", n)
            gate.opened.set()
            await resumed.wait()
            recovery = seen[0]["chat"]
            assert (recovery.recovered, recovery.reason) == (False, "window_exceeded")
            assert recovery.position is not None
            assert recovery.position.seq == 10
            assert sub.positions["chat"] == recovery.position
            assert sub.recoveries == seen[0]


async def test_a_server_that_cannot_resume_the_session_gets_the_rooms_joined_again() -> None:
    with trio.fail_after(20):
        async with serving(make_bus()) as server, \
                eventbus.connect(server.url, reconnect=Backoff(initial=0.05, cap=0.1)) as sub:
            seen: list[dict[str, Recovery]] = []
            resumed = trio.Event()
            sub.on_resume(lambda recoveries: (seen.append(dict(recoveries)), resumed.set()))
            await sub.join("chat")
            generation = sub.generation
            await server.stop()
            # A new server on the same port: another secret, another history.
            await server.start(make_bus())
            await resumed.wait()
            assert seen == [{"chat": Recovery("chat", False, reason="resume_failed",
                                              position=sub.positions["chat"])}]
            assert sub.generation == generation + 1
            assert [conn.rooms for conn in server.bus.connections.values()] == [{"chat"}]


async def test_an_unanswered_publish_fails_when_the_session_could_not_be_resumed() -> None:
    # Tokens that expire at once: every RESUME fails, every connection is a new session.
    bus = make_bus(resume_ttl=1e-6)

    @bus.authorize_publish
    def cut_before_the_answer(sock: Connection, room: str, event: str) -> bool:
        sock._abort(1006, "cut", by_server=False)
        return True

    with trio.fail_after(20):
        async with serving(bus) as server, eventbus.connect(server.url, reconnect=FAST) as pub:
            with pytest.raises(eventbus.ConnectionClosed, match="may or may not have been"):
                await pub.publish("ledger", "pay", 1)


async def test_operations_beyond_the_offline_limit_fail_at_once() -> None:
    bus = make_bus()
    gate = Gate(bus)
    with trio.fail_after(20):
        async with serving(bus) as server, \
                eventbus.connect(server.url, reconnect=FAST, offline_limit=3) as pub:
            gate.close()
            cut(bus, pub.sid)
            await gate.until_waiting()
            results: list[Any] = []
            async with trio.open_nursery() as nursery:
                for n in range(3):
                    async def held(n: int = n) -> None:
                        results.append(await pub.publish("r", "e", n))
                    nursery.start_soon(held)
                await trio.sleep(0.05)
                with pytest.raises(eventbus.ConnectionClosed, match="offline_limit"):
                    await pub.publish("r", "e", 3)
                with pytest.raises(eventbus.ConnectionClosed, match="offline_limit"):
                    await pub.emit("e")
                gate.opened.set()
            assert len(results) == 3, "the three held ones went out after the resume"


async def test_the_next_resume_uses_the_token_the_server_refreshed(
        autojump_clock: trio.abc.Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    # Tokens valid 100 s, refreshed after 50 s (at the heartbeat's tick, 75 s): a
    # connection that lived 145 s resumes with the refreshed one (its WELCOME's has
    # expired by then). The server's wall clock follows the virtual one.
    monkeypatch.setattr(recovery_module, "time", SimpleNamespace(
        time=lambda: 1_000_000.0 + trio.current_time()))
    bus = make_bus(resume_ttl=100.0, ping_interval=300.0, ping_timeout=300.0)
    async with bus.running(), eventbus.testing.connect(bus, reconnect=FAST) as client:
        seen: list[dict[str, Recovery]] = []
        client.on_resume(lambda recoveries: seen.append(dict(recoveries)))
        await client.join("r")
        first = client.state.previous
        with trio.fail_after(200):
            while client.state.previous == first:  # noqa: ASYNC110 - the refresh arrives
                await trio.sleep(1)
        conn = bus.connections[client.sid or ""]
        assert client.state.previous == (conn.sid, conn.resume_token)
        await trio.sleep(70)
        conn._abort(1006, "cut", by_server=False)
        with trio.fail_after(10):
            while not seen:  # noqa: ASYNC110
                await trio.sleep(0.01)
        assert seen[0]["r"].recovered


async def test_a_hook_may_make_requests_and_rejoined_rooms_say_where_they_stand() -> None:
    with trio.fail_after(20):
        async with serving(make_bus()) as server, \
                eventbus.connect(server.url, reconnect=Backoff(initial=0.05, cap=0.1)) as sub:
            answers: list[Any] = []
            done = trio.Event()

            @sub.on_resume
            async def refetch(recoveries: dict[str, Recovery]) -> None:
                answers.append(await sub.call("echo", "state please"))
                answers.append(dict(recoveries))
                done.set()

            await sub.join("chat")
            await server.stop()
            await server.start(make_bus())
            await done.wait()
            state, recoveries = answers
            assert state == "state please"
            recovery = recoveries["chat"]
            assert (recovery.recovered, recovery.reason) == (False, "resume_failed")
            assert recovery.position == sub.positions["chat"], "where the new JOIN put it"


async def test_an_unanswered_publish_to_a_room_without_history_is_not_sent_again() -> None:
    bus = make_bus(history_rooms=["volatile.*=off"])
    cuts: list[str] = []

    @bus.authorize_publish
    def cut_before_the_answer(sock: Connection, room: str, event: str) -> bool:
        if not cuts:
            cuts.append(sock.sid)
            sock._abort(1006, "cut", by_server=False)
        return True

    with trio.fail_after(20):
        async with serving(bus) as server, eventbus.connect(server.url, reconnect=FAST) as pub:
            await pub.join("volatile.state")
            with pytest.raises(eventbus.ConnectionClosed, match="keeps no history"):
                await pub.publish("volatile.state", "pos", 1)
            assert pub.recoveries["volatile.state"].reason == "history_off"
