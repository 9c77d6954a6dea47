"""The bus inside an asyncio program (eventbus.asyncio.run_bus), over real sockets.

Rules: every test is an asyncio test (pytest-asyncio), listens on 127.0.0.1 port 0
only, and is bounded by ``asyncio.timeout``. Clients are the asyncio client
(eventbus.asyncio.connect), the trio client run by ``trio.run`` in a thread of its
own (one trio run per thread: the test's thread hosts the bus's guest run), or a
bare ``websockets`` connection where a close code must be seen as it is. Nothing
waits for time to pass: each step waits for the event that ends it.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trustme
import websockets
from websockets.asyncio.client import connect as ws_connect

import eventbus
import eventbus.asyncio
from eventbus import EventBus, Incoming, Unavailable
from eventbus.adapters import Envelope, Member, MemoryAdapter, Published
from eventbus.asyncio import EmbeddedBus, run_bus

pytestmark = pytest.mark.asyncio

TIMEOUT = 10


def make_bus(**settings: Any) -> EventBus:
    return EventBus(open_rooms=True, **settings)


@asynccontextmanager
async def embedded(bus: EventBus | None = None) -> AsyncIterator[EmbeddedBus]:
    async with run_bus(bus if bus is not None else make_bus(), port=0) as running:
        yield running


async def in_trio_thread(fn: Callable[[], Awaitable[Any]]) -> Any:
    """Run ``trio.run(fn)`` in a thread of its own (the trio client's way in an
    asyncio program); ``fn`` bounds itself."""
    return await asyncio.to_thread(trio.run, fn)


# --- delivery ----------------------------------------------------------------------------


async def test_an_emit_from_asyncio_reaches_a_trio_client_and_an_asyncio_client() -> None:
    loop = asyncio.get_running_loop()
    trio_joined: asyncio.Future[None] = loop.create_future()
    async with asyncio.timeout(TIMEOUT), embedded() as running:

        async def trio_client() -> Incoming:
            with trio.fail_after(TIMEOUT):
                async with eventbus.connect(running.url) as client, \
                        client.subscribe("news") as events:
                    loop.call_soon_threadsafe(trio_joined.set_result, None)
                    async for event in events:
                        return event
            raise AssertionError("the subscription ended")

        trio_side = asyncio.create_task(in_trio_thread(trio_client))
        async with eventbus.asyncio.connect(running.url) as client, \
                client.subscribe("news") as events:
            await trio_joined
            assert len(await running.all_members("news")) == 2
            handed = await running.emit("headline", {"text": "hello"}, to="news")
            assert handed == 2
            got = await anext(aiter(events))
        from_trio: Incoming = await trio_side
    for event in (got, from_trio):
        assert (event.room, event.event, event.data) == ("news", "headline", {"text": "hello"})


async def test_publish_numbers_the_message_and_the_room_keeps_its_position() -> None:
    async with asyncio.timeout(TIMEOUT), embedded() as running, \
            eventbus.asyncio.connect(running.url) as client, client.subscribe("room") as events:
        published = await running.publish("room", "note", [1, 2])
        assert isinstance(published, Published)
        assert published.nodes == 1
        event = await anext(aiter(events))
        assert (event.event, event.data, event.position) == ("note", [1, 2], published.position)
        assert await running.position("room") == published.position
        assert await running.position("nowhere") is None


async def test_call_from_asyncio_gets_each_clients_answer() -> None:
    async with asyncio.timeout(TIMEOUT), embedded() as running, \
            eventbus.asyncio.connect(running.url) as ada, \
            eventbus.asyncio.connect(running.url) as bob:

        @ada.on("double")
        def double(data: int) -> int:
            return data * 2

        @bob.on("double")
        async def double_later(data: int) -> int:
            await asyncio.sleep(0)
            return data * 20

        await ada.join("team")
        await bob.join("team")
        results = await running.call("double", 21, to="team")
        assert results.answers == {ada.sid: 42, bob.sid: 420}
        assert not results.errors
        assert not results.timed_out
        one = await running.call("double", 1, to_sid=bob.sid)
        assert one.answers == {bob.sid: 20}


async def test_members_of_a_room_on_this_node_and_on_every_node() -> None:
    bus = make_bus()
    async with asyncio.timeout(TIMEOUT), embedded(bus) as running, \
            eventbus.asyncio.connect(running.url) as ada, \
            eventbus.asyncio.connect(running.url) as bob:
        await ada.join("lobby")
        await bob.join("lobby")
        expected = [Member(ada.sid, bus.node_id), Member(bob.sid, bus.node_id)]
        assert await running.members("lobby") == expected
        assert sorted(await running.all_members("lobby"), key=lambda m: m.sid) == sorted(
            expected, key=lambda m: m.sid)
        await bob.leave("lobby")
        assert await running.members("lobby") == expected[:1]
        assert await running.members("empty") == []


async def test_statistics_health_port_and_url() -> None:
    async with asyncio.timeout(TIMEOUT), embedded() as running:
        assert running.url == f"ws://127.0.0.1:{running.port}/"
        async with eventbus.asyncio.connect(running.url) as client:
            await client.join("a")
            stats = await running.statistics()
            assert (stats["connections"], stats["rooms"]) == (1, 1)
            assert stats["adapter.state"] == "connected"
            assert await running.health() == (200, {
                "status": "ok", "connections": 1, "adapter": "connected"})


async def test_the_bus_serves_tls_and_the_url_says_wss() -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    async with asyncio.timeout(TIMEOUT), \
            run_bus(make_bus(), port=0, ssl_context=server_context) as running:
        assert running.url == f"wss://127.0.0.1:{running.port}/"
        async with eventbus.asyncio.connect(running.url, ssl_context=client_context) as client:
            assert client.connected


async def test_the_url_of_an_ipv6_host_has_brackets() -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    async with asyncio.timeout(TIMEOUT), run_bus(make_bus(), "::1", 0) as running:
        assert running.url == f"ws://[::1]:{running.port}/"
        async with eventbus.asyncio.connect(running.url) as client:
            assert client.connected


async def test_errors_of_the_bus_methods_are_raised_in_asyncio() -> None:
    async with asyncio.timeout(TIMEOUT), embedded() as running:
        with pytest.raises(TypeError, match="name one target"):
            await running.emit("e", to="a", to_room="b")
        with pytest.raises(ValueError, match="latest delivery needs a key"):
            await running.publish("room", "e", delivery="latest")
        with pytest.raises(TypeError, match="name a target"):
            await running.call("e")


async def test_run_and_run_sync_reach_anything_of_trio() -> None:
    bus = make_bus()

    async def ask_directly(sid: str) -> Any:
        return await bus.connections[sid].call("double", 4)

    async def fails() -> None:
        await trio.lowlevel.checkpoint()
        raise KeyError("from trio")

    async with asyncio.timeout(TIMEOUT), embedded(bus) as running, \
            eventbus.asyncio.connect(running.url) as client:

        @client.on("double")
        def double(data: int) -> int:
            return data * 2

        assert client.sid is not None
        assert await running.run(ask_directly, client.sid) == 8
        assert await running.run_sync(lambda: sorted(bus.connections)) == [client.sid]
        assert await running.run_sync(trio.current_time) > 0  # in trio, between its steps
        with pytest.raises(KeyError, match="from trio"):
            await running.run(fails)
        with pytest.raises(KeyError, match="nobody"):
            await running.run_sync(bus.connections.__getitem__, "nobody")


# --- cancellation ------------------------------------------------------------------------


async def test_a_plain_function_runs_even_if_its_caller_is_cancelled() -> None:
    ran: list[str] = []
    async with asyncio.timeout(TIMEOUT), embedded() as running:
        task = asyncio.create_task(running.run_sync(ran.append, "ran"))
        await asyncio.sleep(0)  # handed to trio: it runs at trio's next step
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await running.run_sync(lambda: None)  # trio runs what it was given in order
        assert ran == ["ran"]


class BlockingAdapter(MemoryAdapter):
    """A MemoryAdapter whose publishes hang until cancelled; it says when one starts
    and whether it was cancelled."""

    def __init__(self) -> None:
        super().__init__()
        self.publishing: asyncio.Event = asyncio.Event()  # set from trio: same thread
        self.cancelled = False

    async def publish(self, envelope: Envelope) -> Published:
        self.publishing.set()
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            self.cancelled = True
            raise


async def test_cancelling_the_task_awaiting_publish_cancels_the_trio_task() -> None:
    adapter = BlockingAdapter()
    async with asyncio.timeout(TIMEOUT), embedded(EventBus(adapter=adapter)) as running:
        task = asyncio.create_task(running.publish("room", "e", 1))
        await adapter.publishing.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The cancelled task returned once the trio task had ended.
        assert adapter.cancelled


async def test_cancelling_the_task_awaiting_call_cancels_the_trio_call() -> None:
    bus = make_bus()
    asked = asyncio.Event()
    async with asyncio.timeout(TIMEOUT), embedded(bus) as running, \
            eventbus.asyncio.connect(running.url) as client:

        @client.on("think")
        async def think(data: Any) -> None:
            asked.set()
            await asyncio.Event().wait()  # never answers

        sid = client.sid
        assert sid is not None

        def pending_calls() -> int | str:
            return bus.connections[sid].statistics()["pending_calls"]

        task = asyncio.create_task(running.call("think", to_sid=sid, timeout=60))
        await asked.wait()
        assert await running.run_sync(pending_calls) == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await running.run_sync(pending_calls) == 0


async def test_a_request_cut_short_by_the_stop_raises_unavailable() -> None:
    async with asyncio.timeout(TIMEOUT):
        async with embedded() as running:
            task = asyncio.create_task(running.run(trio.sleep_forever))
            await running.run_sync(lambda: None)  # the request's task has been started
        with pytest.raises(Unavailable, match="the bus stopped"):
            await task


# --- the end of the block ----------------------------------------------------------------


async def test_leaving_the_block_drains_closes_with_1001_and_returns() -> None:
    bus = make_bus(drain_timeout=5)
    handling = asyncio.Event()
    release = trio.Event()

    @bus.on("slow")
    async def slow(sock: eventbus.Connection, data: Any) -> str:
        handling.set()  # in trio, in the asyncio thread: an asyncio.Event may be set
        await release.wait()
        return "finished"

    async with asyncio.timeout(TIMEOUT):
        async with embedded(bus) as running:
            # Outlives the block (a bare connection: the close code as it is).
            ws = await ws_connect(running.url)
            await ws.recv()  # WELCOME
            await ws.send('[1,"slow",null,1]')
            await handling.wait()
            exiting = asyncio.create_task(_leave_after(running, release))
        # The handler running at the shutdown finished and answered, then the close.
        assert await ws.recv() == '[7,1,"finished"]'
        with pytest.raises(websockets.ConnectionClosedOK):
            await ws.recv()
        assert ws.close_code == 1001
        await exiting
        with pytest.raises(RuntimeError, match="the bus has stopped"):
            await running.emit("late")
        assert not trio.lowlevel.in_trio_run()


async def _leave_after(running: EmbeddedBus, release: trio.Event) -> None:
    """Let the handler finish once the bus drains (its /health answers 503)."""
    while (await running.health())[0] == 200:  # noqa: ASYNC110 - no event for the drain
        await asyncio.sleep(0.01)
    await running.run_sync(release.set)


async def test_the_trio_client_reconnects_after_the_1001_of_an_ended_block() -> None:
    # The 1001 is a restart to clients: the trio client waits, and comes back when a
    # new block serves on the same port.
    loop = asyncio.get_running_loop()
    joined: list[asyncio.Future[str]] = [loop.create_future(), loop.create_future()]
    async with asyncio.timeout(TIMEOUT):
        async with embedded() as running:
            port = running.port

            async def trio_client() -> None:
                with trio.fail_after(TIMEOUT):
                    backoff = eventbus.Backoff(initial=0.05, cap=0.1)
                    async with eventbus.connect(running.url, reconnect=backoff) as client:

                        @client.on_reconnect
                        def reconnected() -> None:
                            loop.call_soon_threadsafe(joined[1].set_result, "again")

                        await client.join("room")
                        loop.call_soon_threadsafe(joined[0].set_result, "first")
                        while not joined[1].done():  # noqa: ASYNC110 - set by another loop
                            await trio.sleep(0.01)

            trio_side = asyncio.create_task(in_trio_thread(trio_client))
            assert await joined[0] == "first"
        async with run_bus(make_bus(), port=port) as again:
            assert await joined[1] == "again"
            await trio_side
            assert await again.statistics() is not None


async def test_an_exception_in_the_block_stops_the_bus_at_once_and_propagates() -> None:
    connections: list[websockets.ClientConnection] = []

    async def fail_in_the_block() -> None:
        async with embedded() as running:
            connections.append(ws := await ws_connect(running.url))
            await ws.recv()  # WELCOME
            _ = 1 / 0

    async with asyncio.timeout(TIMEOUT):
        with pytest.raises(ZeroDivisionError):
            await fail_in_the_block()
        [ws] = connections
        # Stopped at once: the connection was dropped, with no closing handshake.
        with pytest.raises(websockets.ConnectionClosedError):
            await ws.recv()
        assert not trio.lowlevel.in_trio_run()


async def test_a_cancelled_block_stops_the_bus_and_the_cancellation_propagates() -> None:
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2), embedded():
            await asyncio.sleep(TIMEOUT)
    assert not trio.lowlevel.in_trio_run()
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_a_cancellation_while_the_bus_drains_stops_it_at_once() -> None:
    bus = make_bus(drain_timeout=60)
    handling = asyncio.Event()

    handler_cancelled = False

    @bus.on("forever")
    async def forever(sock: eventbus.Connection, data: Any) -> None:
        nonlocal handler_cancelled
        handling.set()
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            handler_cancelled = True
            raise

    async def run_block() -> None:
        async with embedded(bus) as running:
            ws = await ws_connect(running.url)
            await ws.recv()
            await ws.send('[1,"forever",null,1]')
            await handling.wait()
            block_exiting.set()
        raise AssertionError("not reached: cancelled while the bus drains")

    block_exiting = asyncio.Event()
    async with asyncio.timeout(TIMEOUT):
        task = asyncio.create_task(run_block())
        await block_exiting.wait()
        await asyncio.sleep(0)  # the block is now leaving: the bus drains
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The drain (up to 60 s) was cut short: the handler it waited for was cancelled.
        assert handler_cancelled
    assert not trio.lowlevel.in_trio_run()


async def test_a_cancellation_while_entering_stops_the_run() -> None:
    async with asyncio.timeout(TIMEOUT):
        task = asyncio.create_task(embedded().__aenter__())
        await asyncio.sleep(0)  # started the guest run, now waits for it to listen
        assert trio.lowlevel.in_trio_run()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert not trio.lowlevel.in_trio_run()


async def test_a_bus_shut_down_from_trio_ends_the_run_but_not_the_block() -> None:
    bus = make_bus()
    async with asyncio.timeout(TIMEOUT), embedded(bus) as running:
        await running.run_sync(bus.shutdown)
        while trio.lowlevel.in_trio_run():  # noqa: ASYNC110 - no event for this
            await asyncio.sleep(0.01)
        with pytest.raises(RuntimeError, match="the bus has stopped"):
            await running.statistics()


# --- failures of the trio side -----------------------------------------------------------


class FailingAdapter(MemoryAdapter):
    """A MemoryAdapter whose run fails once told to."""

    def __init__(self) -> None:
        super().__init__()
        self.fail = trio.Event()

    async def run(self, node: Any, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(super().run, node)
            task_status.started()
            await self.fail.wait()
            raise RuntimeError("the adapter broke")


async def test_a_failure_in_trio_interrupts_the_block_and_is_raised_from_it() -> None:
    adapter = FailingAdapter()
    interrupted = False

    async def break_the_adapter() -> None:
        nonlocal interrupted
        async with embedded(EventBus(adapter=adapter)) as running:
            await running.run_sync(adapter.fail.set)
            try:
                await asyncio.sleep(TIMEOUT)
            finally:
                interrupted = True

    async with asyncio.timeout(TIMEOUT):
        with pytest.raises(ExceptionGroup) as failure:
            await break_the_adapter()
    assert interrupted
    assert failure.group_contains(RuntimeError, match="the adapter broke", depth=None)
    # The cancellation that interrupted the block was taken back.
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
    assert not trio.lowlevel.in_trio_run()


async def test_a_failure_in_trio_while_the_block_fails_too_raises_both() -> None:
    adapter = FailingAdapter()

    async def fail_on_both_sides() -> None:
        async with embedded(EventBus(adapter=adapter)) as running:
            await running.run_sync(adapter.fail.set)
            try:
                await asyncio.sleep(TIMEOUT)
            finally:
                raise ValueError("the block failed as it was interrupted")

    async with asyncio.timeout(TIMEOUT):
        with pytest.raises(BaseExceptionGroup) as failure:
            await fail_on_both_sides()
    assert failure.group_contains(ValueError, depth=1)
    assert failure.group_contains(RuntimeError, match="the adapter broke", depth=None)


async def test_a_port_in_use_raises_oserror_on_entering() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        async with asyncio.timeout(TIMEOUT):
            with pytest.raises(OSError, match=r"[Aa]ddress already in use"):
                async with run_bus(make_bus(), port=taken.getsockname()[1]):
                    raise AssertionError("entered")
    assert not trio.lowlevel.in_trio_run()


async def test_a_second_run_bus_in_the_same_thread_raises_runtimeerror() -> None:
    async with asyncio.timeout(TIMEOUT), embedded() as running:
        with pytest.raises(RuntimeError, match="one trio guest run at a time"):
            async with embedded():
                raise AssertionError("entered")
        with pytest.raises(RuntimeError, match="inside a run"):
            trio.run(trio.lowlevel.checkpoint)  # trio's own refusal, as the docs say
        assert (await running.health())[0] == 200  # the first one serves on


async def test_embedding_is_loaded_on_first_use_only_and_needs_no_websockets() -> None:
    import eventbus.asyncio.embed

    assert eventbus.asyncio.run_bus is eventbus.asyncio.embed.run_bus
    assert eventbus.asyncio.EmbeddedBus is eventbus.asyncio.embed.EmbeddedBus
    # In a fresh interpreter: the package alone loads neither the embedding nor the
    # client; the embedding loads trio, not the client's websockets.
    check = (
        "import sys, eventbus.asyncio\n"
        "assert 'eventbus.asyncio.embed' not in sys.modules\n"
        "assert 'eventbus.asyncio.client' not in sys.modules\n"
        "from eventbus.asyncio import run_bus\n"
        "assert 'trio' in sys.modules\n"
        "assert 'websockets' not in sys.modules, 'websockets loaded'\n"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", check, stderr=asyncio.subprocess.PIPE)
    _, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()
