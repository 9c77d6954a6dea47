"""Connection lifecycle over real sockets: heartbeats, connect and disconnect hooks,
graceful shutdown, closes by the application, and handlers that fail."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from eventbus import Connection, Disconnect, EventBus, Forbidden
from eventbus.protocol import Ack, Emit, ErrorReply

from .conftest import open_bus, raw_client, serving
from .test_handshake import (
    OP_PING,
    OP_PONG,
    close_code,
    echo,
    raw_websocket,
)


def recording_bus(**settings: Any) -> tuple[EventBus, trio.MemoryReceiveChannel[Any]]:
    """A bus whose hooks report ``("connect", sock)`` and ``("disconnect", sock,
    Disconnect)`` on the returned channel."""
    bus = open_bus(**settings)
    send, receive = trio.open_memory_channel[Any](100)

    @bus.on_connect
    async def connected(sock: Connection) -> None:
        sock.state["hello"] = "from on_connect"
        send.send_nowait(("connect", sock))

    @bus.on_disconnect
    async def disconnected(sock: Connection, disconnect: Disconnect) -> None:
        send.send_nowait(("disconnect", sock, disconnect))

    @bus.on("state")
    async def state(sock: Connection, data: Any) -> Any:
        return sock.state

    return bus, receive


async def next_disconnect(events: trio.MemoryReceiveChannel[Any]) -> tuple[Connection, Disconnect]:
    """Skip connect events up to the next disconnect."""
    while True:
        event = await events.receive()
        if event[0] == "disconnect":
            return event[1], event[2]


# --- heartbeats ---------------------------------------------------------------------------


async def test_client_that_never_answers_pings_is_closed_with_4002() -> None:
    bus, events = recording_bus(ping_interval=0.2, ping_timeout=0.2)
    with trio.fail_after(5):
        async with serving(bus) as port, raw_websocket(port) as ws:
            welcome = await ws.read_welcome()
            kind, sock = await events.receive()
            assert kind == "connect"
            assert sock.sid == welcome["sid"]
            opcode, _ = await ws.read_frame()
            assert opcode == OP_PING
            pinged = trio.current_time()
            code, _ = await ws.read_close()
            assert code == 4002
            assert trio.current_time() - pinged >= 0.15  # it had ping_timeout to answer
            await ws.expect_eof()
            kind, closed, disconnect = await events.receive()
            assert (kind, closed) == ("disconnect", sock)
            assert disconnect.code == 4002
            assert disconnect.by_server is True
            assert sid_gone(bus, sock)


def sid_gone(bus: EventBus, sock: Connection) -> bool:
    return sock.sid not in bus.connections


async def test_client_that_answers_pings_stays_connected() -> None:
    bus, events = recording_bus(ping_interval=0.2, ping_timeout=0.2)
    with trio.fail_after(5):
        async with serving(bus) as port, raw_client(port) as client:
            # trio-websocket answers pings in its reader task, unasked.
            await client.recv_nothing(1.2)
            await echo(client, 1)
            kind, _ = await events.receive()
            assert kind == "connect"
            with pytest.raises(trio.WouldBlock):
                events.receive_nowait()


async def test_raw_client_answering_pings_by_hand_stays_connected() -> None:
    bus, _ = recording_bus(ping_interval=0.2, ping_timeout=0.2)
    with trio.fail_after(5):
        async with serving(bus) as port, raw_websocket(port) as ws:
            await ws.read_welcome()
            for _ in range(4):  # 4 rounds of ping_interval: > ping_interval + ping_timeout
                opcode, payload = await ws.read_frame()
                assert opcode == OP_PING
                assert len(payload) <= 125
                await ws.send_frame(OP_PONG, payload)
            await ws.send_frame(0x1, b'[1,"echo",1,1]')
            assert await ws.read_frame() == (0x1, b"[7,1,1]")


async def test_server_answers_a_client_ping_with_the_same_payload() -> None:
    with trio.fail_after(5):
        async with serving(open_bus()) as port, raw_websocket(port) as ws:
            await ws.read_welcome()
            await ws.send_frame(OP_PING, b"are you there")
            assert await ws.read_frame() == (OP_PONG, b"are you there")
            await ws.send_frame(0x1, b'[1,"echo",2,2]')
            assert await ws.read_frame() == (0x1, b"[7,2,2]")


# --- connect and disconnect hooks ----------------------------------------------------


async def test_on_connect_runs_before_the_first_request() -> None:
    bus, events = recording_bus()
    with trio.fail_after(5):
        async with serving(bus) as port, raw_client(port) as client:
            await client.send(Emit("state", None, 1))
            assert await client.recv() == Ack(1, {"hello": "from on_connect"})
            kind, sock = await events.receive()
            assert (kind, sock.sid) == ("connect", client.sid)
            assert bus.connections[client.sid] is sock


@pytest.mark.parametrize(("code", "reason"), [(1000, "bye"), (4100, "")])
async def test_client_close_reaches_on_disconnect(code: int, reason: str) -> None:
    bus, events = recording_bus()
    with trio.fail_after(5):
        async with serving(bus) as port:
            async with raw_client(port) as client:
                _, sock = await events.receive()
                await client.ws.aclose(code, reason)
            kind, closed, disconnect = await events.receive()
            assert (kind, closed) == ("disconnect", sock)
            assert disconnect == Disconnect(code, reason, by_server=False)
            assert sid_gone(bus, sock)


async def test_abrupt_tcp_close_is_1006() -> None:
    bus, events = recording_bus()
    with trio.fail_after(5):
        async with serving(bus) as port:
            async with raw_websocket(port) as ws:
                await ws.read_welcome()
                _, sock = await events.receive()
                await ws.send_frame(0x1, b'[4,"lobby",1]')
                await ws.read_frame()  # joined
                assert bus.members("lobby") == [sock]
            # the raw client's TCP stream is closed here, without a close frame
            kind, closed, disconnect = await events.receive()
            assert (kind, closed) == ("disconnect", sock)
            assert disconnect.code == 1006
            assert disconnect.by_server is False
            assert bus.members("lobby") == []
            assert sid_gone(bus, sock)


# --- closes by the application ----------------------------------------------------------


async def test_server_side_close_4003_reaches_the_client() -> None:
    bus, events = recording_bus()
    with trio.fail_after(5):
        async with serving(bus) as port, raw_client(port) as client, \
                raw_client(port) as other:
            bus.connections[client.sid].close(4003, "revoked")
            assert await close_code(client) == 4003
            closed, disconnect = await next_disconnect(events)
            assert closed.sid == client.sid
            assert disconnect == Disconnect(4003, "revoked", by_server=True)
            await echo(other, 1)


async def test_handler_may_close_its_own_connection() -> None:
    bus = open_bus()

    @bus.on("logout")
    async def logout(sock: Connection, data: Any) -> Any:
        sock.close(4003, "logged out")
        return "bye"

    with trio.fail_after(5):
        async with serving(bus) as port, raw_client(port) as client:
            await client.send(Emit("logout", None, 1))
            assert await close_code(client) == 4003


async def test_on_connect_that_fails_closes_with_1011_and_the_server_goes_on() -> None:
    bus = open_bus()

    @bus.on_connect
    async def connected(sock: Connection) -> None:
        if sock.request.query.get("fail"):
            raise RuntimeError("hook bug")

    with trio.fail_after(5):
        async with serving(bus) as port:
            async with raw_client(port, path="/?fail=1") as client:
                assert await close_code(client) == 1011
            async with raw_client(port) as client:
                await echo(client, 1)


# --- failing handlers ---------------------------------------------------------------------


async def test_failing_handlers_never_stop_the_server() -> None:
    bus = open_bus()

    @bus.on("boom")
    async def boom(sock: Connection, data: Any) -> Any:
        raise RuntimeError("secret detail")

    @bus.on("deny")
    async def deny(sock: Connection, data: Any) -> Any:
        raise Forbidden("not you")

    @bus.on("many", concurrency=4)
    async def many(sock: Connection, data: Any) -> Any:
        raise ValueError("also a bug")

    with trio.fail_after(5):
        async with serving(bus) as port, raw_client(port) as client, \
                raw_client(port) as other:
            await client.send(Emit("boom", None, 1))
            answer = await client.recv()
            assert answer == ErrorReply(1, "internal_error", answer.message)
            assert "secret" not in answer.message
            assert "Traceback" not in answer.message
            await client.send(Emit("boom", None))  # no ack id: reported with null
            answer = await client.recv()
            assert (answer.ack_id, answer.code) == (None, "internal_error")
            await client.send(Emit("deny", None, 2))
            assert await client.recv() == ErrorReply(2, "forbidden", "not you")
            await client.send(Emit("many", None, 3))
            answer = await client.recv()
            assert (answer.ack_id, answer.code) == (3, "internal_error")
            await echo(client, 4)
            await echo(other, 1)
            async with raw_client(port) as newcomer:
                await echo(newcomer, 1)


# --- graceful shutdown ---


async def refused(port: int) -> None:
    """Return once connecting is refused: the listener closes a few scheduler ticks
    after shutdown() (bounded by the caller's fail_after)."""
    while True:
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
        except OSError:
            return
        await stream.aclose()
        await trio.sleep(0.01)


async def test_graceful_shutdown() -> None:
    bus, events = recording_bus()
    started, release = trio.Event(), trio.Event()
    served = trio.Event()

    @bus.on("slow")
    async def slow(sock: Connection, data: Any) -> Any:
        started.set()
        await release.wait()
        return "done"

    async def serve(task_status: trio.TaskStatus[Any]) -> None:
        await bus.serve("127.0.0.1", 0, task_status=task_status)
        served.set()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(serve)
            port = listeners[0].socket.getsockname()[1]
            async with raw_client(port) as a, raw_client(port, "msgpack") as b:
                await a.send(Emit("slow", None, 1))
                await started.wait()
                bus.shutdown()
                assert bus.draining
                # New connections are refused while the server drains.
                await refused(port)
                # Everything is now blocked: the handler on its event, the server
                # in its drain. New requests are refused.
                await trio.testing.wait_all_tasks_blocked()
                await b.send(Emit("echo", "late", 7))
                answer = await b.recv()
                assert isinstance(answer, ErrorReply)
                assert (answer.ack_id, answer.code) == (7, "unavailable")
                await b.send(Emit("echo", "no id"))
                answer = await b.recv()
                assert (answer.ack_id, answer.code) == (None, "unavailable")
                assert not served.is_set()
                release.set()
                # The running handler's answer arrives before the close.
                assert await a.recv() == Ack(1, "done")
                assert await close_code(a) == 1001
                assert await close_code(b) == 1001
            await served.wait()
        # on_disconnect saw both go with 1001, closed by the server.
        seen = []
        while True:
            try:
                event = events.receive_nowait()
            except trio.WouldBlock:
                break
            if event[0] == "disconnect":
                seen.append(event[2])
        assert seen == [Disconnect(1001, "server shutting down", by_server=True)] * 2
        assert not bus.connections


async def test_shutdown_does_not_wait_for_a_handler_past_drain_timeout() -> None:
    bus = open_bus(drain_timeout=0.2)
    started = trio.Event()

    @bus.on("forever")
    async def forever(sock: Connection, data: Any) -> Any:
        started.set()
        await trio.sleep_forever()

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(bus.serve, "127.0.0.1", 0)
            port = listeners[0].socket.getsockname()[1]
            async with raw_client(port) as client:
                await client.send(Emit("forever", None, 1))
                await started.wait()
                start = trio.current_time()
                bus.shutdown()
                assert await close_code(client) == 1001
                assert trio.current_time() - start >= 0.15
        # the nursery exited: serve returned


async def test_listeners_are_closed_when_serve_is_cancelled_before_it_serves() -> None:
    import socket

    from eventbus.adapters import MemoryAdapter

    class Stuck(MemoryAdapter):
        async def run(self, node: Any, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            await trio.sleep_forever()  # never says it started

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    bus = EventBus(adapter=Stuck())
    with trio.move_on_after(0.2):
        await bus.serve("127.0.0.1", port)
    # Had the listener stayed open, listening on the port again would fail.
    listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
    for listener in listeners:
        await listener.aclose()
