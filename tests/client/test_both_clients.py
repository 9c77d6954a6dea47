"""One suite of client behaviour, run against both clients: the trio client
(``eventbus.connect``) and the asyncio one (``eventbus.asyncio.connect``).

Each scenario is written once, against the client API and a small runtime (sleep,
timeouts, background tasks, events) that each flavour provides; the test runs it
under ``trio.run`` or ``asyncio.run``. The server is a real bus on 127.0.0.1, run by
trio in a thread of its own, so that both flavours meet the same server over real
sockets; the test drives it (cut a connection, hold reconnections at the
handshake, call a client) through trio's token.

Tests that only one client can have stay with it: the trio client's tests that
use virtual time or trio's in-memory streams (eventbus.testing) are about trio.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import trio

import eventbus
import eventbus.asyncio
from eventbus import Backoff, Connection, EventBus, Recovery
from eventbus.errors import Forbidden, LocalProtocolError, UnknownEvent

FAST = Backoff(initial=0.01, cap=0.05)


# --- the server, in a thread ------------------------------------------------------------


class ThreadedServer:
    """A bus served by trio in a thread of its own; ``run(fn)`` calls ``fn()`` in
    trio (between two of its steps) and returns what it returned."""

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        self.port = 0
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(self.bus.serve, "127.0.0.1", 0)
            self.port = listeners[0].socket.getsockname()[1]
            self._ready.set()
            await self._stop.wait()
            nursery.cancel_scope.cancel()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    def run(self, fn: Callable[[], Any]) -> Any:
        return trio.from_thread.run_sync(fn, trio_token=self._token)

    def __enter__(self) -> ThreadedServer:
        self._thread.start()
        assert self._ready.wait(10), "the server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join(10)


class Gate:
    """Holds new handshakes while closed (an ``authenticate`` hook in the server)."""

    def __init__(self, bus: EventBus) -> None:
        self.open = True
        self.waiting = 0
        self._changed: trio.Event | None = None
        bus.authenticate(self._wait)

    async def _wait(self, request: Any) -> dict[str, Any]:
        self.waiting += 1
        while not self.open:
            self._changed = trio.Event()
            await self._changed.wait()
        return {}

    def close(self) -> None:
        self.open = False
        self.waiting = 0

    def release(self) -> None:
        self.open = True
        if self._changed is not None:
            self._changed.set()


def make_bus(**settings: Any) -> tuple[EventBus, Gate]:
    settings.setdefault("open_rooms", True)
    settings.setdefault("rate", 0)
    bus = EventBus(**settings)
    gate = Gate(bus)
    seen: list[Any] = []

    @bus.on("echo")
    async def echo(sock: Connection, data: Any) -> Any:
        return data

    @bus.on("note")
    async def note(sock: Connection, data: Any) -> None:
        seen.append(data)

    @bus.on("notes")
    async def notes(sock: Connection, data: Any) -> Any:
        return list(seen)

    @bus.on("deny")
    async def deny(sock: Connection, data: Any) -> None:
        raise Forbidden("not you")

    @bus.on("ask")
    async def ask(sock: Connection, data: Any) -> Any:
        return await sock.call(data, "question?", timeout=5)

    @bus.authorize_join
    def may_join(sock: Connection, room: str) -> bool:
        return room != "closed"

    @bus.authorize_publish
    def may_publish(sock: Connection, room: str, event: str) -> bool:
        return room != "closed"

    return bus, gate


# --- the two runtimes -----------------------------------------------------------------


class TrioRuntime:
    name = "trio"
    connect = staticmethod(eventbus.connect)

    async def sleep(self, seconds: float) -> None:
        await trio.sleep(seconds)

    def timeout(self, seconds: float) -> contextlib.AbstractContextManager[Any]:
        return trio.fail_after(seconds)

    @contextlib.asynccontextmanager
    async def group(self) -> AsyncIterator[Callable[[Callable[[], Awaitable[Any]]], None]]:
        async with trio.open_nursery() as nursery:
            yield lambda fn: nursery.start_soon(fn)

    async def in_thread(self, fn: Callable[[], Any]) -> Any:
        return await trio.to_thread.run_sync(fn)

    def run(self, scenario: Callable[[Any], Awaitable[None]]) -> None:
        trio.run(scenario, self)


class AsyncioRuntime:
    name = "asyncio"
    connect = staticmethod(eventbus.asyncio.connect)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def timeout(self, seconds: float) -> contextlib.AbstractAsyncContextManager[Any]:
        return asyncio.timeout(seconds)

    @contextlib.asynccontextmanager
    async def group(self) -> AsyncIterator[Callable[[Callable[[], Awaitable[Any]]], None]]:
        async with asyncio.TaskGroup() as tasks:
            yield lambda fn: tasks.create_task(fn())  # type: ignore[arg-type]

    async def in_thread(self, fn: Callable[[], Any]) -> Any:
        return await asyncio.to_thread(fn)

    def run(self, scenario: Callable[[Any], Awaitable[None]]) -> None:
        asyncio.run(scenario(self))  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def within(rt: Any, seconds: float) -> AsyncIterator[None]:
    """A deadline in either flavour (trio's is a plain context manager)."""
    manager = rt.timeout(seconds)
    if hasattr(manager, "__aenter__"):
        async with manager:
            yield
    else:
        with manager:
            yield


@pytest.fixture(params=[TrioRuntime, AsyncioRuntime], ids=["trio", "asyncio"])
def rt(request: pytest.FixtureRequest) -> Any:
    return request.param()


@pytest.fixture
def served() -> Iterator[tuple[ThreadedServer, Gate]]:
    bus, gate = make_bus()
    with ThreadedServer(bus) as server:
        yield server, gate


async def in_server(rt: Any, server: ThreadedServer, fn: Callable[[], Any]) -> Any:
    """Run ``fn()`` in the server's trio thread (from a thread of the runtime's, so
    that neither loop blocks)."""
    return await rt.in_thread(lambda: server.run(fn))


async def cut(rt: Any, server: ThreadedServer, sid: str | None) -> None:
    """Drop a client's connection from the server's side, without a close frame."""
    assert sid is not None
    await in_server(rt, server,
                    lambda: server.bus.connections[sid]._abort(1006, "cut", by_server=False))


async def until(rt: Any, condition: Callable[[], bool], seconds: float = 5) -> None:
    async with within(rt, seconds):
        while not condition():
            await rt.sleep(0.01)


# --- the scenarios ------------------------------------------------------------------------


def test_calls_answers_and_errors_with_their_codes(rt: Any, served: Any) -> None:
    server, _ = served

    async def scenario(rt: Any) -> None:
        async with within(rt, 10), rt.connect(server.url) as client:
            assert await client.call("echo", {"x": [1, 2]}) == {"x": [1, 2]}
            with pytest.raises(UnknownEvent):
                await client.call("nope")
            with pytest.raises(Forbidden, match="not you"):
                await client.call("deny")
            with pytest.raises(LocalProtocolError):
                await client.call("$reserved")
            await client.emit("note", "one")
            await client.emit("note", "two")
            assert await client.call("notes") == ["one", "two"], "emits in order, before"
            assert client.connected
            assert client.sid is not None

    rt.run(scenario)


def test_rooms_publish_subscribe_leave_and_except_sender(rt: Any, served: Any) -> None:
    server, _ = served

    async def scenario(rt: Any) -> None:
        async with within(rt, 10), rt.connect(server.url) as pub, \
                rt.connect(server.url, codec="msgpack") as sub:
            seen: list[Any] = []
            pub.on("chat")(seen.append)
            joined = await pub.join("lobby")
            async with sub.subscribe("lobby") as events:
                position = await pub.publish("lobby", "chat", {"text": "hi", "raw": "x"})
                event = await events.__anext__()
                assert (event.room, event.event, event.data) == (
                    "lobby", "chat", {"text": "hi", "raw": "x"})
                assert event.position == position
                assert position.seq == joined.seq + 1
            assert await pub.call("echo", 1) == 1
            assert seen == [], "the publisher does not get its own message"
            assert sub.rooms == frozenset()
            with pytest.raises(Forbidden):
                await pub.join("closed")
            with pytest.raises(Forbidden):
                await pub.publish("closed", "e")
            await pub.leave("lobby")
            assert pub.rooms == frozenset()

    rt.run(scenario)


def test_direct_events_run_handlers_and_server_calls_get_answers(rt: Any, served: Any) -> None:
    server, _ = served

    async def scenario(rt: Any) -> None:
        async with within(rt, 10), rt.connect(server.url) as client:
            got: list[Any] = []

            @client.on("question?")
            async def reply(data: Any) -> Any:
                return f"answer to {data}"

            @client.on("notice")
            def notice(data: Any, incoming: Any) -> None:
                got.append((incoming.event, incoming.room, data))

            assert await client.call("ask", "question?") == "answer to question?"
            sid = client.sid
            await in_server(rt, server, lambda: server.bus.emit("notice", {"n": 1}, to_sid=sid))
            await until(rt, lambda: bool(got))
            assert got == [("notice", None, {"n": 1})]
            with pytest.raises(UnknownEvent):
                await client.call("ask", "unhandled")

    rt.run(scenario)


def test_a_cut_client_resumes_and_gets_what_it_missed_once(rt: Any, served: Any) -> None:
    server, gate = served

    async def scenario(rt: Any) -> None:
        async with within(rt, 20), rt.connect(server.url) as pub, \
                rt.connect(server.url, reconnect=FAST) as sub:
            verdicts: list[dict[str, Recovery]] = []
            sub.on_resume(lambda recoveries: verdicts.append(dict(recoveries)))
            async with sub.subscribe("news") as events:
                await in_server(rt, server, gate.close)
                await cut(rt, server, sub.sid)
                await until(rt, lambda: gate.waiting > 0)
                for n in range(20):
                    await pub.publish("news", "n", n)
                await in_server(rt, server, gate.release)
                got = [(await events.__anext__()).data for _ in range(20)]
                assert got == list(range(20))
                await until(rt, lambda: bool(verdicts))
                recovery = verdicts[0]["news"]
                assert (recovery.recovered, recovery.replayed) == (True, 20)
                await pub.publish("news", "n", 20)
                assert (await events.__anext__()).data == 20
                assert sub.statistics()["duplicates"] == 0
                assert sub.statistics()["reconnects"] == 1

    rt.run(scenario)


def test_publishes_made_while_away_go_out_once_after_the_resume(rt: Any, served: Any) -> None:
    server, gate = served

    async def scenario(rt: Any) -> None:
        async with within(rt, 20), rt.connect(server.url) as sub, \
                rt.connect(server.url, reconnect=FAST, offline_limit=3) as pub, \
                sub.subscribe("orders") as events:
            await in_server(rt, server, gate.close)
            await cut(rt, server, pub.sid)
            await until(rt, lambda: gate.waiting > 0)
            await until(rt, lambda: not pub.connected)
            positions: list[Any] = []
            async with rt.group() as start:
                for n in range(3):
                    async def held(n: int = n) -> None:
                        positions.append(await pub.publish("orders", "buy", n))
                    start(held)
                await rt.sleep(0.05)
                with pytest.raises(eventbus.ConnectionClosed, match="offline_limit"):
                    await pub.publish("orders", "buy", 99)
                await in_server(rt, server, gate.release)
            got = sorted([(await events.__anext__()).data for _ in range(3)])
            assert got == [0, 1, 2]
            assert len({p.seq for p in positions}) == 3

    rt.run(scenario)


def test_a_final_close_code_stops_the_client(rt: Any, served: Any) -> None:
    server, _ = served

    async def scenario(rt: Any) -> None:
        async with within(rt, 10), rt.connect(server.url, reconnect=FAST) as client:
            sid = client.sid
            await in_server(rt, server, lambda: server.bus.connections[sid].close(4003, "revoked"))
            await until(rt, lambda: client.closed)
            with pytest.raises(eventbus.ConnectionClosed) as closed:
                await client.call("echo", 1)
            assert closed.value.close_code == 4003

    rt.run(scenario)


def test_a_refused_handshake_is_raised_by_connect(rt: Any) -> None:
    bus, _ = make_bus()

    @bus.authenticate
    def nobody(request: Any) -> Any:
        raise eventbus.HandshakeRejected(401, "who are you?")

    with ThreadedServer(bus) as server:
        async def scenario(rt: Any) -> None:
            with pytest.raises(eventbus.HandshakeRejected) as refused:
                async with rt.connect(server.url):
                    pass
            assert refused.value.status == 401

        rt.run(scenario)


def test_hooks_for_gaps_errors_disconnects_and_the_state_a_client_shows(rt: Any) -> None:
    bus, _ = make_bus(ping_interval=0.2, ping_timeout=5)

    @bus.on("never", concurrency=4)  # in a task of its own: the others go on
    async def never(sock: Connection, data: Any) -> None:
        await trio.sleep_forever()

    with ThreadedServer(bus) as server:
        async def scenario(rt: Any) -> None:
            async with within(rt, 15), rt.connect(server.url, reconnect=FAST) as client:
                gaps: list[Any] = []
                errors: list[Any] = []
                lost: list[Any] = []
                client.on_gap(lambda room, count: gaps.append((room, count)))
                client.on_error(errors.append)
                client.on_disconnect(lost.append)
                async with client.subscribe("feed") as events:
                    await in_server(rt, server, lambda: server.bus._router.lost("feed", 3))
                    await until(rt, lambda: bool(gaps))
                    assert gaps == [("feed", 3)]
                    assert events.missed == 3
                    assert client.statistics()["missed"] == 3
                    with pytest.raises((asyncio.QueueEmpty, trio.WouldBlock)):
                        events.receive_nowait()
                await client.emit("nope")  # no ack id: its error comes to the hook
                await until(rt, lambda: bool(errors))
                assert isinstance(errors[0], UnknownEvent)
                with pytest.raises(eventbus.CallTimeout):
                    await client.call("never", timeout=0.1)
                # A handler may emit, but not wait for an answer (its reader would).
                inside: list[BaseException] = []

                @client.on("poke")
                async def poke(data: Any) -> None:
                    try:
                        await client.call("echo", 1)
                    except RuntimeError as exc:
                        inside.append(exc)

                sid = client.sid
                await in_server(rt, server, lambda: server.bus.emit("poke", None, to_sid=sid))
                await until(rt, lambda: bool(inside))
                await rt.sleep(0.5)  # server pings (0.2 s) keep a quiet connection alive
                assert client.connected
                assert client.codec == "json"
                assert client.options is not None
                assert client.options.ping_interval == 200
                assert client.generation == 1
                assert client.recoveries == {}
                assert "connected" in repr(client)
                await client.join("r")
                assert set(client.positions) == {"r"}
                await cut(rt, server, client.sid)
                await until(rt, lambda: bool(lost) and client.connected)
                assert lost[0].close_code == 1006
            assert client.closed
            with pytest.raises(eventbus.ConnectionClosed):
                await client.call("echo", 1)

        rt.run(scenario)


def test_a_server_that_cannot_resume_gets_the_rooms_joined_again(rt: Any) -> None:
    # Tokens that expire at once: every RESUME fails, and a publish whose answer was
    # lost is not sent again into a new session.
    bus, _ = make_bus(resume_ttl=1e-6)
    cuts: list[str] = []

    @bus.authorize_publish
    def cut_once(sock: Connection, room: str, event: str) -> bool:
        if event == "pay" and not cuts:
            cuts.append(sock.sid)
            sock._abort(1006, "cut", by_server=False)
        return True

    with ThreadedServer(bus) as server:
        async def scenario(rt: Any) -> None:
            async with within(rt, 15), rt.connect(server.url, reconnect=FAST) as client:
                seen: list[dict[str, Recovery]] = []
                client.on_resume(lambda recoveries: seen.append(dict(recoveries)))
                await client.join("chat")
                with pytest.raises(eventbus.ConnectionClosed, match="new session"):
                    await client.publish("chat", "pay", 1)
                await until(rt, lambda: bool(seen))
                recovery = seen[0]["chat"]
                assert (recovery.recovered, recovery.reason) == (False, "resume_failed")
                assert recovery.position == client.positions["chat"]
                assert client.generation == 2

        rt.run(scenario)


def test_a_publish_whose_answer_was_lost_is_sent_again_and_applied_once(rt: Any) -> None:
    bus, _ = make_bus(max_pending=1)
    cuts: list[str] = []

    @bus.authorize_publish
    def cut_once(sock: Connection, room: str, event: str) -> bool:
        if event == "pay" and not cuts:
            cuts.append(sock.sid)
            sock._abort(1006, "cut", by_server=False)
        return True

    with ThreadedServer(bus) as server:
        async def scenario(rt: Any) -> None:
            async with within(rt, 15), rt.connect(server.url) as sub, \
                    rt.connect(server.url, reconnect=FAST) as pub, \
                    sub.subscribe("ledger") as events:
                position = await pub.publish("ledger", "pay", {"amount": 10})
                assert cuts, "the first answer was lost"
                first = await events.__anext__()
                assert first.position == position
                # max_pending 1: two at once, the second waits for the first's slot.
                async with rt.group() as start:
                    for n in range(2):
                        async def note(n: int = n) -> None:
                            await pub.publish("ledger", "note", n)
                        start(note)
                notes = sorted([(await events.__anext__()).data for _ in range(2)])
                assert notes == [0, 1], "the payment once, then the notes"

        rt.run(scenario)


def test_connecting_to_nothing_fails_at_once(rt: Any) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    async def scenario(rt: Any) -> None:
        with pytest.raises(eventbus.ConnectionClosed, match="connect"):
            async with rt.connect(f"ws://127.0.0.1:{port}/"):
                pass

    rt.run(scenario)


def test_handlers_of_room_events_failing_handlers_and_unencodable_answers(rt: Any) -> None:
    bus, _ = make_bus()
    answers: list[Any] = []

    @bus.on("ask_binary")
    async def ask_binary(sock: Connection, data: Any) -> Any:
        try:
            return await sock.call("give_bytes", None, timeout=5)
        except eventbus.RequestError as exc:
            answers.append(exc.code)
            return exc.code

    with ThreadedServer(bus) as server:
        async def scenario(rt: Any) -> None:
            async with within(rt, 15), rt.connect(server.url) as pub, \
                    rt.connect(server.url) as sub:
                seen: list[Any] = []

                @sub.on("chat")
                def on_chat(data: Any, incoming: Any) -> None:
                    seen.append((incoming.room, data))

                @sub.on("boom")
                def on_boom(data: Any) -> None:
                    raise ValueError("a bug in the app")

                @sub.on("give_bytes")
                def give_bytes(data: Any) -> Any:
                    return b"\x00"  # JSON cannot carry it

                async with sub.subscribe("lobby") as events:
                    await pub.publish("lobby", "boom", 1)  # its handler fails: logged
                    await pub.publish("lobby", "chat", "hi")
                    assert (await events.__anext__()).event == "boom"
                    await until(rt, lambda: bool(seen))
                    assert seen == [("lobby", "hi")]
                    # Buffered before its handler ran.
                    assert events.receive_nowait().event == "chat"
                    # Held by the subscription: leave() keeps it until the block ends.
                    await sub.join("lobby")
                    await sub.leave("lobby")
                    assert "lobby" in sub.rooms
                assert await sub.call("ask_binary") == "unencodable"
                await sub.emit("nope")  # an error without ack id, and no hook: logged
                await in_server(rt, server, lambda: server.bus._router.lost("x", 1))
                with pytest.raises(ValueError, match="at least one room"):
                    async with sub.subscribe():
                        pass

        rt.run(scenario)


@pytest.mark.parametrize("resumable", [True, False], ids=["resumed", "joined-again"])
def test_rooms_refused_after_a_reconnect_are_dropped_and_reported(
        rt: Any, resumable: bool) -> None:
    bus, _ = make_bus(**({} if resumable else {"resume_ttl": 1e-6}))
    refused: set[str] = set()

    @bus.authorize_join
    def may_join(sock: Connection, room: str) -> bool:
        return room not in refused

    with ThreadedServer(bus) as server:
        async def scenario(rt: Any) -> None:
            async with within(rt, 15), rt.connect(server.url, reconnect=FAST) as client:
                errors: list[Any] = []
                seen: list[dict[str, Recovery]] = []
                client.on_error(errors.append)
                client.on_resume(lambda recoveries: seen.append(dict(recoveries)))
                await client.join("kept")
                await client.join("flaky")
                refused.add("flaky")
                async with client.subscribe("closing") as events:
                    await cut(rt, server, client.sid)
                    await until(rt, lambda: bool(seen))
                    assert client.rooms == frozenset({"kept", "closing"})
                    reason = "forbidden" if resumable else "resume_failed"
                    assert seen[0]["flaky"].reason == reason
                    if not resumable:
                        assert isinstance(errors[0], Forbidden)  # the JOIN's error
                    sid = client.sid
                    await in_server(rt, server,
                                    lambda: server.bus.connections[sid].close(4003, "no"))
                    with pytest.raises(eventbus.ConnectionClosed):
                        await events.__anext__()

        rt.run(scenario)


def test_arguments_that_cannot_work_are_refused() -> None:
    import ssl

    for connect in (eventbus.connect, eventbus.asyncio.connect):
        with pytest.raises(ValueError, match="wss"):
            connect("ws://127.0.0.1:1/", ssl_context=ssl.create_default_context())


class RawServer:
    """A WebSocket server written by hand on a plain socket, in a thread, for the
    servers a real bus never is: it upgrades (choosing ``subprotocol``), sends
    ``first`` (an already framed message, or nothing), then reads nothing at all
    (a ping from the client is never answered)."""

    def __init__(self, subprotocol: str, first: bytes) -> None:
        import socket

        self._subprotocol = subprotocol
        self._first = first
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        import base64
        import hashlib

        # Short waits: closing a listener from another thread does not wake accept().
        self._listener.settimeout(0.05)
        conns = []
        try:
            while not self._done.is_set():
                try:
                    conn, _ = self._listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
                conn.settimeout(5)
                conns.append(conn)
                request = b""
                while b"\r\n\r\n" not in request:
                    request += conn.recv(4096)
                key = next(line.split(b":", 1)[1].strip() for line in request.split(b"\r\n")
                           if line.lower().startswith(b"sec-websocket-key"))
                accept = base64.b64encode(hashlib.sha1(
                    key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
                conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                             b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept
                             + b"\r\nSec-WebSocket-Protocol: "
                             + self._subprotocol.encode() + b"\r\n\r\n" + self._first)
        finally:
            for conn in conns:
                conn.close()

    def __enter__(self) -> RawServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(5)
        self._listener.close()


def text_frame(text: str) -> bytes:
    payload = text.encode()
    assert len(payload) < 65536
    if len(payload) < 126:
        return bytes([0x81, len(payload)]) + payload
    return bytes([0x81, 126]) + len(payload).to_bytes(2, "big") + payload


WELCOME = ('[0,"raw1","' + "t" * 43 + '",{"ping_interval":200,"ping_timeout":200,'
           '"max_frame":1048576,"max_name":128,"max_rooms":100,"max_pending":64,"rate":0,'
           '"burst":0}]')


@pytest.mark.parametrize(("subprotocol", "first", "says"), [
    ("eventbus.v1.json", b"", "no welcome"),
    ("eventbus.v1.json", text_frame('[2,"early",null]'), "before its welcome"),
    ("other.protocol", b"", "handshake|subprotocol|connection"),
])
def test_a_server_that_breaks_the_opening_is_refused(
        rt: Any, subprotocol: str, first: bytes, says: str) -> None:
    with RawServer(subprotocol, first) as server:
        async def scenario(rt: Any) -> None:
            with pytest.raises(eventbus.ConnectionClosed, match=says):
                async with rt.connect(f"ws://127.0.0.1:{server.port}/", connect_timeout=0.5,
                                      close_timeout=0.2):
                    pass

        rt.run(scenario)


def test_a_server_that_stops_answering_pings_is_declared_dead(rt: Any) -> None:
    with RawServer("eventbus.v1.json", text_frame(WELCOME)) as server:
        async def scenario(rt: Any) -> None:
            async with within(rt, 10), rt.connect(
                    f"ws://127.0.0.1:{server.port}/", reconnect=False,
                    close_timeout=0.2) as client:
                lost: list[Any] = []
                client.on_disconnect(lost.append)
                # 0.2 s of silence, a ping, 0.2 s without its pong: dead.
                await until(rt, lambda: client.closed, 5)
                assert "silent" in str(lost[0])

        rt.run(scenario)


def test_names_are_checked_against_the_servers_max_name_and_reconnects_retry(rt: Any) -> None:
    bus, _ = make_bus(max_name=16)
    attempts: list[int] = []

    @bus.authenticate
    async def once_busy(request: Any) -> dict[str, Any]:
        attempts.append(1)
        if len(attempts) == 2:  # the first reconnection attempt: refused, retried
            raise eventbus.HandshakeRejected(503, "busy")
        return {}

    with ThreadedServer(bus) as server:
        async def scenario(rt: Any) -> None:
            async with within(rt, 15), rt.connect(server.url, reconnect=FAST) as client:
                with pytest.raises(LocalProtocolError):
                    await client.join("a-room-name-longer-than-16")
                reconnected: list[int] = []
                client.on_reconnect(lambda: reconnected.append(1))
                await cut(rt, server, client.sid)
                await until(rt, lambda: bool(reconnected))
                assert len(attempts) == 3
                await client.aclose()
                await client.aclose()  # idempotent
                assert client.closed

        rt.run(scenario)


def test_packets_a_server_should_not_send_are_ignored(rt: Any) -> None:
    quiet = WELCOME.replace('"ping_interval":200', '"ping_interval":0')
    frames = text_frame(quiet) + text_frame('[99,"what"]') + text_frame(quiet)
    with RawServer("eventbus.v1.json", frames) as server:
        async def scenario(rt: Any) -> None:
            async with within(rt, 10), rt.connect(
                    f"ws://127.0.0.1:{server.port}/", reconnect=False,
                    close_timeout=0.2) as client:
                # An invalid packet and a second WELCOME: logged and ignored; with
                # ping_interval 0 there is no heartbeat to declare the server dead.
                await rt.sleep(0.3)
                assert client.connected
                assert client.options is not None
                assert client.options.ping_interval == 0

        rt.run(scenario)


def test_an_operation_waits_wait_reconnect_then_fails(rt: Any, served: Any) -> None:
    server, gate = served

    async def scenario(rt: Any) -> None:
        async with within(rt, 10), rt.connect(server.url, reconnect=FAST,
                                              wait_reconnect=0.2) as client:
            await in_server(rt, server, gate.close)
            await cut(rt, server, client.sid)
            await until(rt, lambda: not client.connected)
            with pytest.raises(eventbus.ConnectionClosed, match="no reconnection within"):
                await client.call("echo", 1)
            await in_server(rt, server, gate.release)
            await until(rt, lambda: client.connected)
            assert await client.call("echo", 2) == 2

    rt.run(scenario)


def test_an_unanswered_publish_is_not_sent_again_into_a_room_not_recovered(rt: Any) -> None:
    bus, gate = make_bus(history_size=3)
    cuts: list[str] = []

    @bus.authorize_publish
    def cut_once(sock: Connection, room: str, event: str) -> bool:
        if event == "pay" and not cuts:
            cuts.append(sock.sid)
            gate.close()  # its reconnection waits while the room's history moves on
            sock._abort(1006, "cut", by_server=False)
        return True

    with ThreadedServer(bus) as server:
        async def scenario(rt: Any) -> None:
            async with within(rt, 15), rt.connect(server.url) as other, \
                    rt.connect(server.url, reconnect=FAST) as pub:
                await pub.join("ledger")
                outcome: list[BaseException] = []

                async def pay() -> None:
                    try:
                        await pub.publish("ledger", "pay", 1)
                    except eventbus.ConnectionClosed as exc:
                        outcome.append(exc)

                async with rt.group() as start:
                    start(pay)
                    await until(rt, lambda: gate.waiting > 0)
                    for n in range(5):  # the payment leaves the 3-message history
                        await other.publish("ledger", "note", n)
                    await in_server(rt, server, gate.release)
                [error] = outcome
                assert "not recovered (window_exceeded)" in str(error)
                assert pub.recoveries["ledger"].reason == "window_exceeded"

        rt.run(scenario)
