"""The trio client: ``async with eventbus.connect(url) as client: ...``.

:func:`connect` opens a :class:`Client`, which emits and calls events, joins,
leaves and publishes to rooms, subscribes to rooms (:class:`Subscription`), runs
``on`` handlers for what the server sends (:class:`Incoming`), reconnects with
:class:`Backoff` when the connection is lost, and resumes its session
(:class:`Recovery`). Its protocol logic is the sans-IO :mod:`eventbus.client.core`,
which the asyncio client (:mod:`eventbus.asyncio`) shares.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .backoff import Backoff
from .messages import Incoming, Recovery

if TYPE_CHECKING:
    from .client import Client, connect, open_client
    from .subscription import Subscription

__all__ = ["Backoff", "Client", "Incoming", "Recovery", "Subscription", "connect",
           "open_client"]

# Loaded on first use, so that importing the sans-IO core (eventbus.client.core)
# loads no I/O library.
_LAZY = {"Client": "client", "connect": "client", "open_client": "client",
         "Subscription": "subscription"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'eventbus.client' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
