"""The in-memory adapter passes the conformance suite, and keeps a lone node's rooms."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest

from eventbus.adapters import Adapter, MemoryAdapter, MemoryHub
from eventbus.testing import check_adapter


@asynccontextmanager
async def on_one_hub(count: int) -> AsyncIterator[Sequence[Adapter]]:
    hub = MemoryHub()
    yield [MemoryAdapter(hub) for _ in range(count)]


async def test_the_memory_adapter_passes_the_conformance_suite() -> None:
    await check_adapter(on_one_hub)


def test_odd_data_has_a_size() -> None:
    from eventbus.adapters import Envelope, memory

    assert memory._size(Envelope("r", "e", object())) == 1024
    assert memory._size(Envelope("r", "e", [1, "two"])) > 16


async def test_a_room_nobody_uses_is_forgotten_an_hour_after_its_history_ended(
        autojump_clock: object) -> None:
    import trio

    from eventbus.adapters import Envelope, HistoryBounds, Signal, SignalKind
    from eventbus.adapters.conformance import RecordingNode

    hub = MemoryHub(clock=trio.current_time)  # virtual time, for the test
    adapter = MemoryAdapter(hub)
    node = RecordingNode("n1")
    node.bounds = HistoryBounds(10, 5.0, 1 << 20)
    assert repr(adapter) == "<MemoryAdapter unstarted>"
    async with trio.open_nursery() as nursery:
        await nursery.start(adapter.run, node)
        assert repr(adapter) == "<MemoryAdapter n1>"
        with pytest.raises(RuntimeError, match="another node"):
            adapter.attach(RecordingNode("n2"))
        kept = adapter.publish_nowait(Envelope("quiet", "e", 1))
        assert kept.kept
        assert "quiet" in hub._rooms, "kept with no node in it: it has history"
        await trio.sleep(60 * 30)
        assert "quiet" in hub._rooms, "its position outlives its history for an hour"
        assert not hub._rooms["quiet"].history
        await trio.sleep(60 * 40)
        assert "quiet" not in hub._rooms
        # Rooms nobody is in: nothing to signal, nobody to list, a fresh position.
        assert await adapter.members("nowhere") == []
        assert await adapter.signal(Signal(SignalKind.CALL, "n1", [], room="nowhere")) == 0
        assert (await adapter.position("nowhere")).seq == 0
        nursery.cancel_scope.cancel()
    assert adapter.state.value == "idle"


def test_ages_survive_new_trio_runs_of_the_same_hub() -> None:
    import trio

    from eventbus.adapters import Envelope, HistoryBounds
    from eventbus.adapters.conformance import RecordingNode

    hub = MemoryHub()
    node = RecordingNode("n1")
    node.bounds = bounds = HistoryBounds(10, 60.0, 1 << 20)
    adapter = MemoryAdapter(hub)
    adapter.attach(node)

    async def publish() -> Any:
        return adapter.publish_nowait(Envelope("r", "e", 1))

    async def kept(epoch: str) -> list[int]:
        page = await adapter.history("r", epoch, 0, 10, bounds)
        return [seq for seq, _ in page.messages]

    # Each trio run starts its clock at another random offset: ages must not care.
    first = trio.run(publish)
    for _ in range(3):
        assert trio.run(kept, first.position.epoch) == [first.position.seq]
