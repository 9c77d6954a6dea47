"""The eventbus app the benchmarks serve.

Run from the repository root:

    python -m eventbus serve benchmarks.apps.eventbus_app:bus --port 8765 --log-level warning

Open rooms (any client may join and publish), an ``echo`` event answered with its
data, and limits set for measuring throughput rather than policy:

- ``rate=0``: no inbound rate limit (the default, 100 packets/s per connection,
  would throttle every workload);
- ``max_pending=256``: above the W2/W5 publisher's window of 50 unacked publishes;
- ``send_queue_size`` / ``send_queue_bytes``: large enough that a receiver that
  falls behind for a moment is queued for, not disconnected as a slow consumer
  (python-socketio and socket.io queue without a bound).

``BENCH_EVENTBUS_SETTINGS``, a JSON object of ``ServerConfig`` fields, changes or adds
to these: ``run.py`` sets it for a variant such as ``eventbus@HEAD[metrics=false]``
(``{"metrics": false}``). A setting the served commit does not have is an error.
"""

from __future__ import annotations

import json
import os
from typing import Any

from eventbus import EventBus
from eventbus.server import Connection

SETTINGS: dict[str, Any] = {
    "open_rooms": True,
    "rate": 0,
    "max_pending": 256,
    "send_queue_size": 1_000_000,
    "send_queue_bytes": 1 << 30,
}
SETTINGS.update(json.loads(os.environ.get("BENCH_EVENTBUS_SETTINGS") or "{}"))

bus = EventBus(**SETTINGS)


@bus.on("echo")
async def echo(sock: Connection, data: Any) -> Any:
    return data
