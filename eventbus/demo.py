"""The built-in demo bus that ``eventbus serve`` runs when given no app.

Rooms are open to every client (join, leave, publish), and one event is handled:
``echo`` answers with the data it was sent.
"""

from __future__ import annotations

from typing import Any

from .server import Connection, EventBus

__all__ = ["make_demo_bus"]


def make_demo_bus() -> EventBus:
    """A new demo bus: open rooms and an ``echo`` handler."""
    bus = EventBus(open_rooms=True)

    @bus.on("echo")
    async def echo(sock: Connection, data: Any) -> Any:
        return data

    return bus
