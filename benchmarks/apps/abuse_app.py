"""The eventbus app the abuse suite (``benchmarks/abuse.py``) serves.

Run from the repository root:

    python -m eventbus serve benchmarks.apps.abuse_app:bus --port 8765

Two events, both without payload types:

- ``echo``: answered with its data (the bystander's round trip);
- ``slow``: sleeps :data:`SLOW_SECONDS` and answers ``None``, so that what an
  abusive client sends to it piles up in the server while the handler is busy.

Rooms are open. Every other setting is the server's default, so that the suite
measures what a deployment that changes nothing gets; the default rate limit (100
packets/s, burst 200) lets every flood through, since each one needs few packets
or none (control frames and continuation frames are not packets). To measure
other settings, give them as a JSON object in ``EVENTBUS_ABUSE_SETTINGS``, e.g.
``EVENTBUS_ABUSE_SETTINGS='{"rate": 0}'`` (``abuse.py --setting rate=0`` does this).
"""

from __future__ import annotations

import json
import os
from typing import Any

import trio

from eventbus import EventBus
from eventbus.server import Connection

#: How long the ``slow`` handler takes.
SLOW_SECONDS = 1.0

SETTINGS: dict[str, Any] = {"open_rooms": True}
SETTINGS.update(json.loads(os.environ.get("EVENTBUS_ABUSE_SETTINGS") or "{}"))

bus = EventBus(**SETTINGS)


@bus.on("echo")
async def echo(sock: Connection, data: Any) -> Any:
    return data


@bus.on("slow")
async def slow(sock: Connection, data: Any) -> None:
    await trio.sleep(SLOW_SECONDS)
