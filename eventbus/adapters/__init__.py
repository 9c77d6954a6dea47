"""How the nodes of a bus share rooms: the adapter seam and its implementations.

The in-memory adapter (:class:`MemoryAdapter`, the default) serves one node, or
several in one process on a shared :class:`MemoryHub`. The Redis adapter
(``eventbus.adapters.redis``, with the ``redis`` extra) joins nodes in several
processes or on several machines.
"""

from .base import (
    Adapter,
    AdapterState,
    Envelope,
    HistoryBounds,
    HistoryPage,
    Member,
    Node,
    Published,
    Signal,
    SignalKind,
)
from .memory import MemoryAdapter, MemoryHub

__all__ = [
    "Adapter",
    "AdapterState",
    "Envelope",
    "HistoryBounds",
    "HistoryPage",
    "Member",
    "MemoryAdapter",
    "MemoryHub",
    "Node",
    "Published",
    "Signal",
    "SignalKind",
]
