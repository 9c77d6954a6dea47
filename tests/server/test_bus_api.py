"""The bus's own API at its edges: wrong arguments, publish and its position,
statistics, the adapter swap, resume refused, and handshake failures."""

from __future__ import annotations

import logging
import socket
from typing import Any

import pytest
import trio
import trio.testing

from eventbus import Connection, Delivery, EventBus, RequestError, ServerConfig
from eventbus.adapters import MemoryAdapter
from eventbus.protocol import Ack, Emit, ErrorReply, Event, Resume

from .conftest import open_bus, raw_client, serving
from .test_handshake import http_request, refused_upgrade, upgrade_request


def test_a_config_or_settings_but_not_both() -> None:
    with pytest.raises(TypeError):
        EventBus(ServerConfig(), rate=5)


async def test_wrong_targets_and_latest_without_a_key_are_refused() -> None:
    bus = open_bus()
    with pytest.raises(TypeError):
        bus.emit("e", to=123)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="key"):
        bus.emit("e", to="r", delivery="latest")
    with pytest.raises(ValueError, match="key"):
        await bus.publish("r", "e", delivery=Delivery.LATEST)


async def test_publish_returns_the_position_and_statistics_show_the_adapter() -> None:
    bus = open_bus()
    with trio.fail_after(10):
        async with serving(bus) as port, raw_client(port) as member:
            await member.send(Emit("echo", None, 1))
            await member.recv()
            sock = bus.connections[member.sid]
            sock.join("r")
            published = await bus.publish("r", "news", {"n": 1}, skip=None)
            assert published.nodes == 1
            assert bus.position("r") == published.position
            packet = await member.recv()
            assert (packet.epoch, packet.seq) == (  # type: ignore[union-attr]
                published.position.epoch, published.position.seq)
            # Skipping the only member (or a closed connection) sends nothing.
            assert bus.emit("e", 1, to_sid=member.sid, skip=sock) == 0
            stats = bus.statistics()
            assert stats["connections"] == 1
            assert stats["rooms"] == 1
            assert stats["adapter.state"] == "connected"
            sock.close()
            assert bus.emit("e", 1, to=sock) == 0


async def test_the_adapter_may_be_swapped_only_before_the_bus_runs() -> None:
    bus = open_bus()
    other = MemoryAdapter()
    bus.use_adapter(other)
    assert bus.adapter is other
    async with serving(bus):
        with pytest.raises(RuntimeError):
            bus.use_adapter(MemoryAdapter())


async def test_resume_is_refused_until_sessions_are_kept() -> None:
    with trio.fail_after(10):
        async with serving(open_bus()) as port, raw_client(port) as client:
            await client.send(Resume("someone", "tok", {}, 5))
            answer = await client.recv()
            assert isinstance(answer, ErrorReply)
            assert (answer.ack_id, answer.code) == (5, "resume_failed")


async def test_a_concurrent_handler_may_answer_with_a_request_error() -> None:
    bus = open_bus()

    @bus.on("deny", concurrency=4)
    async def deny(sock: Connection, data: Any) -> None:
        raise RequestError("no", code="forbidden")

    with trio.fail_after(10):
        async with serving(bus) as port, raw_client(port) as client:
            await client.send(Emit("deny", None, 1))
            assert await client.recv() == ErrorReply(1, "forbidden", "no")


async def test_a_failing_on_disconnect_hook_is_logged_and_harmless(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = open_bus()

    @bus.on_disconnect
    def boom(sock: Connection, disconnect: Any) -> None:
        raise RuntimeError("hook bug")

    with trio.fail_after(10):
        async with serving(bus) as port:
            async with raw_client(port):
                pass
            while bus.connections:  # noqa: ASYNC110 - polls server state, tests only
                await trio.sleep(0.01)
            async with raw_client(port) as again:
                await again.send(Emit("echo", 1, 1))
                assert await again.recv() == Ack(1, 1)
    assert "on_disconnect hook failed" in caplog.text


async def test_handshake_failures_answer_with_their_status() -> None:
    bus = open_bus()

    @bus.authenticate
    def authenticate(request: Any) -> Any:
        if request.path == "/crash":
            raise RuntimeError("auth bug")
        return {}

    with trio.fail_after(10):
        async with serving(bus) as port:
            status, _ = await refused_upgrade(port, path="/crash")
            assert status == 500
            # No Sec-WebSocket-Key: wsproto refuses the upgrade.
            request = upgrade_request(port).replace(b"Sec-WebSocket-Key", b"X-Nothing")
            status, _, _ = await http_request(port, request)
            assert status == 400


async def test_a_handshake_while_the_bus_drains_gets_503() -> None:
    bus = open_bus()
    with trio.fail_after(10):
        async with bus.running():
            bus.shutdown()
            client, server = trio.testing.memory_stream_pair()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(bus.handle_stream, server)
                await client.send_all(upgrade_request(8765))
                answer = b""
                while chunk := await client.receive_some(65536):
                    answer += chunk
            assert answer.startswith(b"HTTP/1.1 503")


async def test_client_caused_log_lines_beyond_the_budget_are_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="eventbus.server")
    bus = open_bus(allowed_origins=["https://good.example"])
    with trio.fail_after(20):
        async with serving(bus) as port:
            for _ in range(101):
                await refused_upgrade(port, extra=["Origin: https://evil.example"])
            await trio.sleep(1.1)  # the bus-wide budget refills a line a second
            await refused_upgrade(port, extra=["Origin: https://evil.example"])
    refused = [r for r in caplog.records if "refused: 403" in r.getMessage()]
    assert len(refused) in (101, 102)
    assert any("suppressed" in r.getMessage() for r in caplog.records)


async def test_at_capacity_with_only_fresh_handshakes_a_new_client_gets_503() -> None:
    bus = open_bus(max_connections=1)
    with trio.fail_after(10):
        async with serving(bus) as port:
            silent = await trio.open_tcp_stream("127.0.0.1", port)
            try:
                await trio.sleep(0.05)  # it is waiting for its request, but only just
                status, _, _ = await http_request(port, upgrade_request(port))
                assert status == 503
            finally:
                await silent.aclose()


async def test_reuse_port_listeners_share_a_port_and_refuse_a_taken_one() -> None:
    a, b = open_bus(), open_bus()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(lambda task_status: a.serve(
                "127.0.0.1", 0, reuse_port=True, task_status=task_status))
            port = listeners[0].socket.getsockname()[1]
            await nursery.start(lambda task_status: b.serve(
                "127.0.0.1", port, reuse_port=True, task_status=task_status))
            async with raw_client(port) as client:
                await client.send(Emit("echo", 1, 1))
                assert await client.recv() == Ack(1, 1)
            nursery.cancel_scope.cancel()
    plain = socket.socket()
    plain.bind(("127.0.0.1", 0))
    plain.listen()
    try:
        with pytest.raises(OSError, match="in use"):
            await a.serve("127.0.0.1", plain.getsockname()[1], reuse_port=True)
    finally:
        plain.close()


async def test_shutdown_before_running_does_nothing_and_events_reach_no_one() -> None:
    bus = open_bus()
    bus.shutdown()
    assert not bus.draining
    assert bus.emit("e", Event("x", 1).data) == 0


async def test_reconfigure_replaces_the_settings_before_the_bus_runs() -> None:
    bus = open_bus()
    bus.reconfigure(ServerConfig(open_rooms=True, max_elements=3, ping_interval=7))
    assert bus.welcome_options.ping_interval == 7000
    with trio.fail_after(10):
        async with serving(bus) as port, raw_client(port) as client:
            assert client.welcome is not None
            assert client.welcome.options.max_elements == 3
            await client.send(Emit("echo", [1, 2, 3, 4], 1))
            answer = await client.recv()
            assert isinstance(answer, ErrorReply)
            assert answer.code == "invalid_packet"
            with pytest.raises(RuntimeError):
                bus.reconfigure(ServerConfig())
