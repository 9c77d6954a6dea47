"""GET /metrics after real traffic: exact counts, read with prometheus_client's own
parser; and the reference table comes from the collector itself."""

from __future__ import annotations

import json
from typing import Any

import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families

from eventbus.adapters import AdapterState, MemoryAdapter
from eventbus.protocol import Ack, Emit, Join, Publish, RoomEvent
from eventbus.server.metrics import metric_reference

from .conftest import open_bus, raw_client, serving
from .test_handshake import http_get, http_request, refused_upgrade


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, headers, body = await http_get(port, "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    return samples(body.decode())


async def test_metrics_count_exactly_what_was_sent() -> None:
    bus = open_bus(allowed_origins=["https://good.example"])
    with trio.fail_after(10):
        async with serving(bus) as port:
            async with raw_client(port) as a, raw_client(port, "msgpack") as b:
                for client, ack_id in ((a, 100), (b, 100)):
                    await client.send(Join("r", ack_id))
                    assert isinstance(await client.recv(), Ack)
                for n in range(3):
                    await a.send(Emit("echo", n, n + 1))
                    assert await a.recv() == Ack(n + 1, n)
                for n in range(2):
                    await a.send(Publish("r", "say", n, 10 + n))
                    assert isinstance(await a.recv(), Ack)
                    assert isinstance(await b.recv(), RoomEvent)
                status, _ = await refused_upgrade(port, extra=["Origin: https://evil.example"])
                assert status == 403
                got = await scrape(port)
            after = await scrape(port)

    def value(name: str, **labels: Any) -> float:
        return got.get((name, tuple(sorted((k, str(v)) for k, v in labels.items()))), 0.0)

    assert value("eventbus_connections") == 2
    assert value("eventbus_connections_opened_total") == 2
    assert value("eventbus_rooms") == 1
    assert value("eventbus_packets_received_total", type="Join", codec="json") == 1
    assert value("eventbus_packets_received_total", type="Join", codec="msgpack") == 1
    assert value("eventbus_packets_received_total", type="Emit", codec="json") == 3
    assert value("eventbus_packets_received_total", type="Publish", codec="json") == 2
    assert value("eventbus_packets_sent_total", type="Welcome", codec="json") == 1
    assert value("eventbus_packets_sent_total", type="Welcome", codec="msgpack") == 1
    assert value("eventbus_packets_sent_total", type="Ack", codec="json") == 1 + 3 + 2
    assert value("eventbus_packets_sent_total", type="Ack", codec="msgpack") == 1
    # The publisher is skipped: two room messages, to the msgpack member only.
    assert value("eventbus_packets_sent_total", type="RoomEvent", codec="msgpack") == 2
    assert value("eventbus_packets_sent_total", type="RoomEvent", codec="json") == 0
    assert value("eventbus_room_deliveries_total", delivery="reliable") == 2
    assert value("eventbus_handshakes_refused_total", status=403) == 1
    assert value("eventbus_handler_duration_seconds_count", event="echo") == 3
    assert value("eventbus_adapter_connected") == 1
    # After both left: closed, by code and by whom (1006: the test client drops TCP).
    closed = sum(v for (name, _), v in after.items()
                 if name == "eventbus_connections_closed_total")
    assert closed == 2
    assert after[("eventbus_connections", ())] == 0


async def test_metrics_can_be_turned_off() -> None:
    with trio.fail_after(10):
        async with serving(open_bus(metrics=False)) as port:
            status, _, _ = await http_get(port, "/metrics")
            assert status == 426  # not served: /metrics is then just another path


def test_the_reference_lists_every_metric_with_its_type_and_labels() -> None:
    rows = {name: (kind, labels) for name, kind, labels, _ in metric_reference(open_bus())}
    assert rows["eventbus_connections"] == ("gauge", [])
    assert rows["eventbus_packets_sent"] == ("counter", ["type", "codec"])
    assert rows["eventbus_handler_duration_seconds"] == ("histogram", ["event"])
    assert all(doc for *_, doc in metric_reference(open_bus()))


class _DownAdapter(MemoryAdapter):
    """A node whose adapter reports it cannot reach the other nodes."""

    @property
    def state(self) -> AdapterState:
        return AdapterState.DISCONNECTED


async def test_health_says_ok_then_adapter_down_past_the_grace_and_live_stays_200(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bus = open_bus(adapter=_DownAdapter(), health_grace=5)
    async with serving(bus) as port:
        status, _, body = await http_get(port, "/health")
        assert status == 200  # down, but for less than health_grace
        assert json.loads(body)["adapter"] == "disconnected"
        await trio.sleep(6)
        status, _, body = await http_get(port, "/health")
        assert status == 503
        info = json.loads(body)
        assert info["status"] == "adapter_down"
        assert info["adapter_down_seconds"] >= 5
        status, _, body = await http_get(port, "/live")
        assert (status, json.loads(body)) == (200, {"status": "alive"})


async def test_health_says_503_draining_while_the_bus_drains() -> None:
    # On the operations port, which answers during the drain (the bus's own port
    # stops accepting at once).
    bus = open_bus(drain_timeout=5, metrics_port=0)
    release = trio.Event()

    @bus.on("slow")
    async def slow(sock: Any, data: Any) -> None:
        await release.wait()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(bus.serve, "127.0.0.1", 0)
            port = listeners[0].socket.getsockname()[1]
            async with raw_client(port) as client:
                status, _, _ = await http_get(port, "/health")
                assert status == 200
                await client.send(Emit("slow", None))
                while not bus._dispatcher.running:  # noqa: ASYNC110 - polls the server
                    await trio.sleep(0.01)
                ops_port = bus.ops_listeners[0].socket.getsockname()[1]  # type: ignore[attr-defined]
                bus.shutdown()
                status, _, body = await http_get(ops_port, "/health")
                assert (status, json.loads(body)["status"]) == (503, "draining")
                release.set()


async def test_metrics_answer_get_and_head_only() -> None:
    with trio.fail_after(10):
        async with serving(open_bus()) as port:
            status, headers, _ = await http_request(
                port, b"POST /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert (status, headers["allow"]) == (405, "GET, HEAD")


async def test_metrics_may_have_a_port_of_their_own() -> None:
    bus = open_bus(metrics_port=0)
    with trio.fail_after(10):
        async with serving(bus) as port, raw_client(port):
            (ops,) = bus.ops_listeners
            ops_port = ops.socket.getsockname()[1]  # type: ignore[attr-defined]
            assert ops_port != port
            got = await scrape(ops_port)
            assert got[("eventbus_connections", ())] == 1
            status, _, body = await http_get(ops_port, "/health")
            assert (status, json.loads(body)["status"]) == (200, "ok")
            status, _, _ = await http_get(ops_port, "/live")
            assert status == 200
            status, _, _ = await http_get(ops_port, "/anything")
            assert status == 404
            # The bus's own port no longer answers /metrics.
            status, _, _ = await http_get(port, "/metrics")
            assert status == 426


async def test_drops_and_gaps_are_counted_by_delivery_policy_as_the_client_saw_them() -> None:
    from eventbus.protocol import Gap

    bus = open_bus(send_queue_size=4, send_queue_bytes=1 << 20)
    blob = "x" * 4096
    with trio.fail_after(20):
        async with serving(bus) as port, raw_client(port) as slow:
            await slow.send(Join("feed", 1))
            assert isinstance(await slow.recv(), Ack)
            # The client reads nothing meanwhile: its socket fills, then its queue.
            for n in range(3000):
                bus.emit("tick", [n, blob], to="feed", delivery="volatile")
                bus.emit("pos", [n, blob], to="feed", delivery="latest", key="k")
            gaps = dropped = 0
            with trio.move_on_after(1.0):
                while True:
                    packet = await slow.recv()
                    if isinstance(packet, Gap):
                        gaps += 1
                        dropped += packet.count
            found = await scrape(port)
    volatile = found[("eventbus_dropped_total", (("delivery", "volatile"),))]
    latest = found[("eventbus_dropped_total", (("delivery", "latest"),))]
    assert volatile > 0
    assert latest > 0
    assert volatile + latest == dropped, "every drop reported to the client"
    gap_counts = {policy: found.get(("eventbus_gaps_sent_total", (("delivery", policy),)), 0)
                  for policy in ("volatile", "latest")}
    # Each GAP reported volatile drops, latest ones, or both (counted under each).
    assert max(gap_counts.values()) <= gaps <= sum(gap_counts.values())
    assert gap_counts["volatile"] > 0
    assert gap_counts["latest"] > 0


async def test_messages_a_node_lost_from_its_adapter_reach_members_as_a_gap() -> None:
    from eventbus.protocol import Gap

    bus = open_bus()
    with trio.fail_after(10):
        async with serving(bus) as port, raw_client(port) as member:
            await member.send(Join("r", 1))
            assert isinstance(await member.recv(), Ack)
            bus._router.lost("r", 3)  # what an adapter says when history lacks a range
            bus._router.lost("nobody-here", 2)
            assert await member.recv() == Gap("r", 3)
            found = await scrape(port)
    assert found[("eventbus_gaps_sent_total", (("delivery", "reliable"),))] == 1
