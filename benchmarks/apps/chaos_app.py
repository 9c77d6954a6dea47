"""The app the chaos run serves (benchmarks/chaos.py): open rooms, no rate limit, and
a history deep enough for a subscriber cut off for a few seconds at the publisher's
pace to recover. Alone it uses the in-memory adapter; ``eventbus serve --redis URL``
joins the nodes through Redis.
"""

from __future__ import annotations

import json
import os
from typing import Any

from eventbus import EventBus

SETTINGS: dict[str, Any] = {
    "open_rooms": True,
    "rate": 0,
    "max_pending": 256,
    "history_size": 10_000,
    "history_age": 300.0,
    "history_bytes": 64 << 20,
}
SETTINGS.update(json.loads(os.environ.get("CHAOS_EVENTBUS_SETTINGS") or "{}"))

bus = EventBus(**SETTINGS)
