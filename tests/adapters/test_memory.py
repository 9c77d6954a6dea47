"""The in-memory adapter passes the conformance suite, and keeps a lone node's rooms."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from eventbus.adapters import Adapter, MemoryAdapter, MemoryHub
from eventbus.testing import check_adapter


@asynccontextmanager
async def on_one_hub(count: int) -> AsyncIterator[Sequence[Adapter]]:
    hub = MemoryHub()
    yield [MemoryAdapter(hub) for _ in range(count)]


async def test_the_memory_adapter_passes_the_conformance_suite() -> None:
    await check_adapter(on_one_hub)
