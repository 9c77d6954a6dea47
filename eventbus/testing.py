"""Test helpers: clients connected to a bus in the same process, with no sockets.

``async with eventbus.testing.connect(bus) as client:`` connects a real
:class:`~eventbus.Client` to ``bus`` over a
:func:`trio.testing.memory_stream_pair`: the bus serves its end with
:meth:`EventBus.handle_stream <eventbus.EventBus.handle_stream>` in a nursery
owned by the connection, exactly as it would serve a TCP connection, from the
HTTP handshake to the close. No port, no real time: with pytest-trio's
``autojump_clock`` fixture (``MockClock(autojump_threshold=0)``), timeouts and
heartbeats run instantly.

Each reconnection opens a fresh stream pair to the same bus, so reconnecting
after the server closed a connection (``sock.close(1001)``) can be tested too.

``handle_stream`` alone serves connections without the bus's heartbeat (the
server's pings) and graceful shutdown; wrap the test in
``async with bus.running():`` to have those too::

    async with bus.running(), eventbus.testing.connect(bus) as client:
        ...
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import trio
import trio.testing
import trio_websocket

from .adapters.conformance import check_adapter
from .client import Backoff, Client, open_client
from .client.client import subprotocols_for
from .client.transport import (
    Headers,
    Opener,
    collapse_groups,
    encode_headers,
    open_websocket_over,
)

# Imported for real, not only for type checking: the docs resolve the annotations
# with typing.get_type_hints, and an unresolved one would leave a bare name.
from .server import EventBus

__all__ = ["check_adapter", "connect", "memory_opener"]

#: The Host header of in-memory connections.
TEST_HOST = "eventbus.test"


def memory_opener(
    bus: EventBus, *, subprotocols: Sequence[str], headers: list[tuple[bytes, bytes]],
    path: str = "/", connect_timeout: float = 10.0, close_timeout: float = 2.0,
) -> Opener:
    """An opener that connects to ``bus`` over a new in-memory stream pair each time.

    Use it to build a :class:`~eventbus.Client` with a custom opener, or
    see :func:`connect` for the common case.
    """

    @asynccontextmanager
    async def open_memory() -> AsyncIterator[trio_websocket.WebSocketConnection]:
        with collapse_groups():
            # This nursery runs the bus's side of the connection.
            async with trio.open_nursery() as nursery:

                async def open_stream() -> trio.abc.Stream:
                    client_stream, server_stream = trio.testing.memory_stream_pair()
                    nursery.start_soon(bus.handle_stream, server_stream)
                    return client_stream

                try:
                    async with open_websocket_over(
                        open_stream, TEST_HOST, path, subprotocols=subprotocols,
                        headers=headers, connect_timeout=connect_timeout,
                        close_timeout=close_timeout, target=f"ws://{TEST_HOST}{path}",
                    ) as ws:
                        yield ws
                finally:
                    nursery.cancel_scope.cancel()

    return open_memory


def connect(
    bus: EventBus, *, codec: str = "json", headers: Headers | None = None,
    subprotocols: Sequence[str] | None = None, path: str = "/",
    reconnect: bool | Backoff = False, request_timeout: float = 10.0,
    connect_timeout: float = 10.0, wait_reconnect: float = 10.0, close_timeout: float = 2.0,
    offline_limit: int = 1000,
) -> AbstractAsyncContextManager[Client]:
    """Connect a client to ``bus`` in-process: ``async with connect(bus) as client:``.

    The arguments are those of :func:`eventbus.connect`, with the bus in place of
    the URL, and ``path`` for the request path the bus sees. Reconnection is off
    by default: a test usually wants to see a lost connection, not recover it.

    .. versionadded:: 0.1.0
    """
    offered = list(subprotocols) if subprotocols is not None else subprotocols_for(codec)
    opener = memory_opener(bus, subprotocols=offered, headers=encode_headers(headers), path=path,
                           connect_timeout=connect_timeout, close_timeout=close_timeout)
    client = Client(
        opener, target=f"ws://{TEST_HOST}{path}", reconnect=reconnect,
        request_timeout=request_timeout, connect_timeout=connect_timeout,
        wait_reconnect=wait_reconnect, close_timeout=close_timeout, offline_limit=offline_limit,
    )
    return open_client(client)
