"""The client against a real server on 127.0.0.1: rooms, subscriptions, calls both
ways, codecs, and the errors of the handshake."""

from __future__ import annotations

import logging
import socket
from typing import Any

import pytest
import trio

import eventbus
from eventbus import Connection, Incoming
from eventbus.protocol import Position

from .conftest import make_bus, serving


async def test_publish_reaches_the_other_member_not_the_publisher() -> None:
    with trio.fail_after(10):
        async with serving(make_bus()) as server, \
                eventbus.connect(server.url) as a, eventbus.connect(server.url) as b:
            got_a: list[Any] = []
            got_b = trio.Event()
            seen: list[Incoming] = []

            @a.on("chat")
            def on_a(data: Any) -> None:
                got_a.append(data)

            @b.on("chat")
            def on_b(data: Any, incoming: Incoming) -> None:
                seen.append(incoming)
                got_b.set()

            joined_a = await a.join("lobby")
            joined_b = await b.join("lobby")
            assert joined_a.epoch == joined_b.epoch
            position = await a.publish("lobby", "chat", {"text": "hi"})
            assert position == Position(joined_b.epoch, joined_b.seq + 1)
            await got_b.wait()
            assert seen == [Incoming("lobby", "chat", {"text": "hi"}, position.epoch, position.seq)]
            # The publisher is skipped: a round trip later, nothing reached it.
            assert await a.call("echo", 1) == 1
            assert got_a == []
            # Positions are kept per room for a RESUME: the publisher's stays where it
            # joined (its own publish is not something it missed, and replays skip it).
            assert a.positions == {"lobby": joined_a}
            assert b.positions == {"lobby": position}
            # Once B has left, A's messages no longer reach it (the ROOM_EVENT would
            # have been written to B before the answer to B's next request).
            await b.leave("lobby")
            assert b.positions == {}
            await a.publish("lobby", "chat", {"text": "anyone?"})
            assert await b.call("echo", 2) == 2
            assert len(seen) == 1


async def test_subscribe_yields_in_order_and_leaving_stops_events() -> None:
    with trio.fail_after(10):
        async with serving(make_bus()) as server, \
                eventbus.connect(server.url) as pub, eventbus.connect(server.url) as sub:
            async with sub.subscribe("prices", "news") as events:
                assert sub.rooms == {"prices", "news"}
                for i in range(20):
                    await pub.publish("prices" if i % 2 else "news", "tick", i)
                received = [await events.__anext__() for _ in range(20)]
                assert [e.data for e in received] == list(range(20))
                assert [e.room for e in received[:2]] == ["news", "prices"]
                prices = [e.seq for e in received if e.room == "prices"]
                assert prices == sorted(prices)
                assert events.dropped == 0
            assert sub.rooms == frozenset()
            # Left: the server has no member in either room; the message is only kept
            # in the room's history.
            position = await pub.publish("news", "tick", 99)
            assert position is not None
            assert server.bus.members("news") == []
            assert server.bus.members("prices") == []


async def test_subscription_iterates_with_async_for_and_stops_at_exit() -> None:
    with trio.fail_after(10):
        async with serving(make_bus()) as server, \
                eventbus.connect(server.url) as pub, eventbus.connect(server.url) as sub:
            seen: list[Any] = []
            async with sub.subscribe("news") as events:
                for i in range(3):
                    await pub.publish("news", "item", i)
                async for event in events:
                    seen.append(event.data)
                    if len(seen) == 3:
                        break
            assert seen == [0, 1, 2]
            with pytest.raises(StopAsyncIteration):
                await events.__anext__()


async def test_join_and_subscription_share_a_room() -> None:
    with trio.fail_after(10):
        async with serving(make_bus()) as server, eventbus.connect(server.url) as client:
            await client.join("shared")
            async with client.subscribe("shared"):
                pass
            # Still joined explicitly: the subscription did not leave it.
            assert client.rooms == {"shared"}
            assert len(server.bus.members("shared")) == 1
            async with client.subscribe("shared"):
                await client.leave("shared")
                # Held by the subscription until it ends.
                assert len(server.bus.members("shared")) == 1
            await client.call("echo", None)  # the LEAVE was answered before this
            assert server.bus.members("shared") == []


async def test_call_returns_value_or_raises_coded_error_or_times_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with trio.fail_after(10):
        async with serving(make_bus()) as server, eventbus.connect(server.url) as client:
            data = {"a": [1, 2.5, None, "é"]}
            assert await client.call("echo", data) == data
            with pytest.raises(eventbus.Forbidden, match="members only") as forbidden:
                await client.call("fail")
            assert forbidden.value.code == "forbidden"
            with caplog.at_level(logging.ERROR, logger="eventbus.server"), \
                    pytest.raises(eventbus.InternalError) as internal:
                await client.call("crash")
            assert "secret" not in str(internal.value)
            with pytest.raises(eventbus.UnknownEvent):
                await client.call("nobody-handles-this")
            with pytest.raises(eventbus.CallTimeout):
                await client.call("never", timeout=0.2)
            assert client.statistics()["pending"] == 0
            # The connection is still fine after all that.
            assert await client.call("echo", "ok") == "ok"


async def test_room_errors_are_raised() -> None:
    with trio.fail_after(10):
        async with serving(make_bus()) as server, eventbus.connect(server.url) as client:
            with pytest.raises(eventbus.Forbidden):
                await client.join("closed")
            assert client.rooms == frozenset()
            with pytest.raises(eventbus.Forbidden):
                await client.publish("closed", "x", 1)
            with pytest.raises(eventbus.Forbidden):
                async with client.subscribe("open", "closed"):
                    pass  # pragma: no cover
            assert client.rooms == frozenset()
            assert server.bus.members("open") == []


async def test_reserved_and_bad_names_are_refused_locally() -> None:
    with trio.fail_after(10):
        async with serving(make_bus()) as server, eventbus.connect(server.url) as client:
            with pytest.raises(eventbus.LocalProtocolError) as info:
                await client.emit("$admin")
            assert info.value.code == "invalid_name"
            with pytest.raises(eventbus.LocalProtocolError):
                await client.join("x" * 200)


async def test_server_calls_are_answered_by_handlers() -> None:
    with trio.fail_after(10):
        async with serving(make_bus()) as server, eventbus.connect(server.url) as client:

            @client.on("question")
            async def question(data: Any) -> Any:
                if data == "refuse":
                    raise eventbus.Forbidden("user declined")
                if data == "crash":
                    raise ValueError("boom")
                return {"yes": data}

            assert await client.call("ask", 41) == {"answer": {"yes": 41}}
            refused = await client.call("ask", "refuse")
            assert refused == {"error": "[forbidden] user declined", "type": "Forbidden"}
            crashed = await client.call("ask", "crash")
            assert crashed == {"error": "[internal_error] internal error", "type": "InternalError"}
            # Direct server call from the app side, by session id.
            conn = server.bus.connections[client.sid or ""]
            assert await conn.call("question", 1) == {"yes": 1}
            with pytest.raises(eventbus.UnknownEvent):
                await conn.call("no-handler", 1)


async def test_handler_cannot_wait_for_an_answer_but_can_emit() -> None:
    with trio.fail_after(10):
        bus = make_bus()
        got = trio.Event()

        @bus.on("note")
        async def note(sock: Connection, data: Any) -> None:
            got.set()

        async with serving(bus) as server, eventbus.connect(server.url) as client:

            @client.on("question")
            async def question(data: Any) -> Any:
                await client.emit("note", data)
                return await client.call("echo", data)

            answer = await client.call("ask", 1)
            assert answer["type"] == "InternalError"
            await got.wait()


async def test_direct_notifications_and_null_errors_reach_hooks() -> None:
    with trio.fail_after(10):
        async with serving(make_bus()) as server, eventbus.connect(server.url) as client:
            notices: list[Incoming] = []
            errors: list[eventbus.RequestError] = []
            got_notice = trio.Event()
            got_error = trio.Event()

            @client.on("$notice")
            def notice(data: Any, incoming: Incoming) -> None:
                notices.append(incoming)
                got_notice.set()

            @client.on_error
            def on_error(error: eventbus.RequestError) -> None:
                errors.append(error)
                got_error.set()

            server.bus.emit("$notice", "maintenance", to_sid=client.sid)
            await got_notice.wait()
            assert notices == [Incoming(None, "$notice", "maintenance")]
            assert notices[0].position is None
            await client.emit("fail")  # no ack id: the error comes back with ack id null
            await got_error.wait()
            assert isinstance(errors[0], eventbus.Forbidden)


async def test_msgpack_carries_bytes_exactly() -> None:
    blob = bytes(range(256)) * 40
    data = {"blob": blob, "parts": [b"", b"\x00", {"nested": blob[:7]}], "n": -(2**63)}
    with trio.fail_after(10):
        async with serving(make_bus()) as server, \
                eventbus.connect(server.url, codec="msgpack") as a, \
                eventbus.connect(server.url, codec="msgpack") as b:
            assert a.codec == "msgpack"
            assert await a.call("echo", data) == data
            async with b.subscribe("cams") as events:
                await a.publish("cams", "frame", data)
                event = await events.__anext__()
            assert event.data == data
            assert type(event.data["blob"]) is bytes


async def test_json_refuses_bytes_before_sending_and_reports_unencodable_deliveries() -> None:
    with trio.fail_after(10):
        bus = make_bus()
        calls: list[Any] = []

        @bus.on("record")
        async def record(sock: Connection, data: Any) -> None:
            calls.append(data)

        async with serving(bus) as server, \
                eventbus.connect(server.url, codec="json") as text, \
                eventbus.connect(server.url, codec="msgpack") as binary:
            assert text.codec == "json"
            with pytest.raises(eventbus.LocalProtocolError):
                await text.emit("record", b"raw")
            with pytest.raises(eventbus.LocalProtocolError):
                await text.call("record", {"x": [b"raw"]})
            with pytest.raises(eventbus.LocalProtocolError):
                await text.publish("cams", "frame", float("nan"))
            assert await text.call("echo", "still fine") == "still fine"
            assert calls == []
            # Binary published to a room with a JSON member: it gets an ERROR instead.
            errors: list[eventbus.RequestError] = []
            got_error = trio.Event()

            @text.on_error
            def on_error(error: eventbus.RequestError) -> None:
                errors.append(error)
                got_error.set()

            await text.join("cams")
            await binary.publish("cams", "frame", b"\x89PNG")
            await got_error.wait()
            assert errors[0].code == "unencodable"


async def test_subprotocols_let_the_server_choose() -> None:
    with trio.fail_after(10):
        async with serving(make_bus()) as server, eventbus.connect(
            server.url, subprotocols=["eventbus.v9.cbor", "eventbus.v1.msgpack"]
        ) as client:
            assert client.codec == "msgpack"
            assert await client.call("echo", b"x") == b"x"


async def test_headers_reach_the_authenticate_hook_and_rejection_is_mapped() -> None:
    bus = make_bus()

    @bus.authenticate
    async def authenticate(request: eventbus.HandshakeRequest) -> dict[str, str]:
        token = request.header("authorization")
        if token != "Bearer good":
            raise eventbus.HandshakeRejected(401, "bad token")
        return {"user": "ada"}

    with trio.fail_after(10):
        async with serving(bus) as server:
            async with eventbus.connect(server.url, headers={"Authorization": "Bearer good"}) as c:
                assert server.bus.connections[c.sid or ""].state == {"user": "ada"}
            with pytest.raises(eventbus.HandshakeRejected) as info:
                async with eventbus.connect(server.url, headers=[("Authorization", "Bearer bad")]):
                    pass  # pragma: no cover
            assert info.value.status == 401
            assert info.value.message == "bad token"
            with pytest.raises(eventbus.HandshakeRejected) as offered:
                async with eventbus.connect(server.url, subprotocols=["eventbus.v9.cbor"]):
                    pass  # pragma: no cover
            assert offered.value.status == 400


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_refused_connection_raises_connection_closed() -> None:
    with trio.fail_after(10):
        with pytest.raises(eventbus.ConnectionClosed, match="cannot connect") as info:
            async with eventbus.connect(f"ws://127.0.0.1:{free_port()}/"):
                pass  # pragma: no cover
        assert isinstance(info.value, ConnectionError)
        assert info.value.__cause__ is not None


def test_bad_arguments_raise_value_error() -> None:
    with pytest.raises(ValueError, match="ws://"):
        eventbus.connect("http://example.com/")
    with pytest.raises(ValueError, match="codec"):
        eventbus.connect("ws://example.com/", codec="xml")


async def test_user_exceptions_leave_the_block_unwrapped() -> None:
    with trio.fail_after(10):
        async with serving(make_bus()) as server:
            with pytest.raises(KeyError):
                async with eventbus.connect(server.url):
                    raise KeyError("mine")


async def test_a_client_cancelled_from_outside_exits_at_once() -> None:
    # Cancelling the task that runs a client (as Ctrl-C on a program does) cancels the
    # client's reader too, so the server's close reply is never read: waiting for it
    # would only run out close_timeout.
    with trio.fail_after(10):
        async with serving(make_bus()) as server:
            connected = trio.Event()

            async def run_client() -> None:
                async with eventbus.connect(server.url, close_timeout=5):
                    connected.set()
                    await trio.sleep_forever()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(run_client)
                await connected.wait()
                started = trio.current_time()
                nursery.cancel_scope.cancel()
            assert trio.current_time() - started < 1
            # The close frame went out: the server ends the connection.
            while server.bus.connections:  # noqa: ASYNC110 - it ends soon after
                await trio.sleep(0.01)
