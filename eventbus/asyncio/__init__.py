"""eventbus from asyncio code: a client (``async with eventbus.asyncio.connect(url)
as client:``) with the trio client's API and behaviour, and a bus run inside an
asyncio program (``async with eventbus.asyncio.run_bus(bus) as running:``), with
trio in guest mode on the asyncio loop.

The client is a thin asyncio layer over the same sans-IO client core as the trio
client (:mod:`eventbus.client.core`); its WebSocket I/O is the ``websockets``
package's asyncio implementation (``pip install eventbus[asyncio]``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .client import Client, connect
    from .embed import EmbeddedBus, run_bus

__all__ = ["Client", "EmbeddedBus", "connect", "run_bus"]

# Loaded on first use: the embedding needs trio, the client needs websockets, and an
# app that uses one should not pay for the other.
_LAZY = {"Client": "client", "connect": "client", "EmbeddedBus": "embed", "run_bus": "embed"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'eventbus.asyncio' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
