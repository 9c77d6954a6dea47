"""With Redis, /metrics and /health show the adapter: connected, its counts, its levels;
and Redis going away turns /health to 503 after health_grace, /live staying 200."""

from __future__ import annotations

import json

import trio

from eventbus.adapters.redis import RedisAdapter
from eventbus.protocol import Ack, Join
from tests.server.conftest import open_bus, raw_client, serving
from tests.server.test_handshake import http_get
from tests.server.test_metrics import samples

from .conftest import RedisServer


async def test_metrics_and_health_show_the_redis_adapter(own_redis: RedisServer) -> None:
    bus = open_bus(adapter=RedisAdapter(own_redis.url, prefix="m"), health_grace=1)
    with trio.fail_after(30):
        async with serving(bus) as port, raw_client(port) as client:
            await client.send(Join("r", 1))
            assert isinstance(await client.recv(), Ack)
            status, _, body = await http_get(port, "/metrics")
            got = samples(body.decode())
            assert got[("eventbus_adapter_connected", ())] == 1
            assert got[("eventbus_adapter_events_total", (("name", "reconnects"),))] == 0
            assert got[("eventbus_adapter_level", (("name", "rooms"),))] == 1
            own_redis.stop()
            while True:  # 503 once Redis has been gone for health_grace
                status, _, body = await http_get(port, "/health")
                if status == 503:
                    break
                await trio.sleep(0.1)
            assert json.loads(body)["status"] == "adapter_down"
            status, _, _ = await http_get(port, "/live")
            assert status == 200
            own_redis.start()
            while True:  # and 200 again once the adapter is back
                status, _, body = await http_get(port, "/health")
                if status == 200:
                    break
                await trio.sleep(0.1)
            assert json.loads(body)["adapter"] == "connected"
