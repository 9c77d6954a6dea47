"""The router's less travelled paths: signals it cannot act on, events and calls to a
session id that is here, nowhere or on another node, answers that are errors, nodes
that never report, and an adapter that delivers later.

The router alone (no I/O) for the signals; otherwise buses on one MemoryHub, served
on 127.0.0.1 port 0 and spoken to with the raw protocol, under ``trio.fail_after``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio

from eventbus import ConnectionClosed, EventBus, Forbidden
from eventbus.adapters import Envelope, MemoryAdapter, MemoryHub, Published, Signal, SignalKind
from eventbus.protocol import (
    Ack,
    ErrorReply,
    Event,
    Join,
    JsonCodec,
    MsgpackCodec,
    Position,
    Role,
)
from eventbus.server.router import Router

from .conftest import Raw, open_bus, raw_client, serving

NOBODY = "x" * 16  # the part of a sid after its node id


def lone_router() -> Router:
    return Router(MemoryAdapter(), {}, JsonCodec(Role.SERVER), MsgpackCodec(Role.SERVER))


# --- the router alone ------------------------------------------------------------------


def test_a_room_message_for_a_room_without_members_here_is_dropped() -> None:
    router = lone_router()
    router.deliver(Envelope("nowhere", "news"), Position("e1", 1))
    assert router.local_members("nowhere") == []


def test_signals_the_router_cannot_act_on_are_ignored(caplog: pytest.LogCaptureFixture) -> None:
    router = lone_router()
    caplog.set_level(logging.WARNING, "eventbus.server")
    # An event for a connection that is not here; a call while the node is not
    # serving (no nursery to run it in); answers to a call nobody waits for.
    router.receive_signal(Signal(SignalKind.EVENT, "0ther000", [NOBODY, "e", None,
                                                                  "reliable", None]))
    router.receive_signal(Signal(SignalKind.CALL, "0ther000", [1, "e", None, 1.0, None],
                                 room="lobby"))
    router.receive_signal(Signal(SignalKind.ANSWERS, "0ther000", [99, {}, {}, []]))
    assert caplog.records == []
    # A body of the wrong shape (another version, or a bug) is logged, not raised.
    router.receive_signal(Signal(SignalKind.EVENT, "0ther000", ["too short"]))
    [record] = caplog.records
    assert record.getMessage().startswith("ignored a EVENT signal from node 0ther000: ")


# --- one node ---------------------------------------------------------------------------


async def test_events_to_a_sid_go_to_a_connection_here_or_nowhere() -> None:
    bus = open_bus()
    with trio.fail_after(10):
        async with serving(bus) as port, raw_client(port) as client:
            assert bus.emit("hello", 1, to_sid=client.sid) == 1
            assert await client.recv() == Event("hello", 1)
            assert bus.emit("hello", 2, to_sid=bus.node_id + NOBODY) == 0
            assert bus.emit("hello", 3, to_sid="short") == 0  # names no node
            # Binary data for everyone reaches a JSON connection as an error in its
            # place, and no GAP (that is for rooms).
            assert bus.emit("blob", b"\x00") == 1
            note = await client.recv()
            assert isinstance(note, ErrorReply)
            assert (note.ack_id, note.code) == (None, "unencodable")
            await client.recv_nothing()


async def answer(client: Raw, reply: Any = None, error: str | None = None) -> None:
    """Answer the server's next call with ``reply``, or with ``error`` as the code."""
    request = await client.recv()
    assert isinstance(request, Event)
    assert request.ack_id is not None
    if error is not None:
        await client.send(ErrorReply(request.ack_id, error, "not me"))
    else:
        await client.send(Ack(request.ack_id, reply))


async def test_calls_to_a_sid_of_this_node() -> None:
    bus = open_bus()
    with trio.fail_after(10):
        async with serving(bus) as port, raw_client(port) as client:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(answer, client, "here")
                results = await bus.call("you?", None, to_sid=client.sid, timeout=5)
            assert results.answers == {client.sid: "here"}
            nobody = bus.node_id + NOBODY
            results = await bus.call("you?", None, to_sid=nobody, timeout=5)
            assert list(results.errors) == [nobody]
            assert isinstance(results.errors[nobody], ConnectionClosed)


# --- several nodes -----------------------------------------------------------------------


class DeafAdapter(MemoryAdapter):
    """A node whose answers to other nodes' calls never arrive."""

    def signal_nowait(self, signal: Signal, *, node: str) -> bool:
        if signal.kind is SignalKind.ANSWERS:
            return True  # handed over, and lost
        return super().signal_nowait(signal, node=node)


class LaterAdapter(MemoryAdapter):
    """An adapter that delivers room messages later (so never, here)."""

    def publish_nowait(self, envelope: Envelope) -> Published | None:  # type: ignore[override]
        return None


@asynccontextmanager
async def two_nodes(second: type[MemoryAdapter] = MemoryAdapter) -> AsyncIterator[
        tuple[EventBus, Raw, EventBus, Raw]]:
    """Two buses on one hub, one raw client on each, both in room "team"."""
    hub = MemoryHub()
    bus0, bus1 = open_bus(adapter=MemoryAdapter(hub)), open_bus(adapter=second(hub))
    async with serving(bus0) as p0, serving(bus1) as p1, \
            raw_client(p0) as a, raw_client(p1) as b:
        for n, client in enumerate((a, b), start=1):
            await client.send(Join("team", n))
            assert isinstance(await client.recv(), Ack)
        yield bus0, a, bus1, b


async def test_a_call_across_nodes_brings_back_errors_and_unknown_sids() -> None:
    with trio.fail_after(10):
        async with two_nodes() as (bus0, a, bus1, b):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(answer, a, "a!")
                nursery.start_soon(partial(answer, b, error="forbidden"))
                results = await bus0.call("ready?", None, to="team", timeout=5)
            assert results.answers == {a.sid: "a!"}
            assert isinstance(results.errors[b.sid], Forbidden)
            assert str(results.errors[b.sid]).endswith("not me")
            # A sid of the other node that names no connection there.
            nobody = bus1.node_id + NOBODY
            results = await bus0.call("you?", None, to_sid=nobody, timeout=5)
            assert list(results.errors) == [nobody]
            assert isinstance(results.errors[nobody], ConnectionClosed)
            assert list(results.missing_nodes) == []


async def test_a_node_that_never_reports_is_named_in_missing_nodes() -> None:
    # Each call waits out its timeout and the 1 s grace for reports: ~1.1 s in all.
    with trio.fail_after(10):
        async with two_nodes(DeafAdapter) as (bus0, a, bus1, b):
            outcome: dict[str, Any] = {}

            async def call_room() -> None:
                outcome["room"] = await bus0.call("ready?", None, to="team", timeout=0.1)

            async def call_sid() -> None:
                outcome["sid"] = await bus0.call("you?", None, to_sid=b.sid, timeout=0.1)

            async def ignore_both_calls() -> None:
                # Read, so that the raw client's one-message queue never fills.
                for _ in range(2):
                    assert isinstance(await b.recv(), Event)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(answer, a, "a!")
                nursery.start_soon(ignore_both_calls)
                nursery.start_soon(call_room)
                nursery.start_soon(call_sid)
            assert outcome["room"].answers == {a.sid: "a!"}
            assert list(outcome["room"].missing_nodes) == [bus1.node_id]
            assert list(outcome["sid"].missing_nodes) == ["?"]  # no room to ask about


async def test_with_an_adapter_that_delivers_later_emit_counts_this_nodes_members() -> None:
    bus = EventBus(open_rooms=True, adapter=LaterAdapter())
    with trio.fail_after(10):
        async with serving(bus) as port, raw_client(port) as client:
            await client.send(Join("team", 1))
            assert isinstance(await client.recv(), Ack)
            assert bus.emit("news", 1, to="team") == 1  # handed over, not yet delivered
            assert bus.emit("news", 2, to="empty") == 0
            await client.recv_nothing()
