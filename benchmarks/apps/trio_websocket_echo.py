"""Raw echo server on trio-websocket: no event layer, each message sent back.

    python benchmarks/apps/trio_websocket_echo.py --port 8765

What a WebSocket round trip costs on trio with the trio-websocket stack.
"""

from __future__ import annotations

import argparse
import contextlib

import trio
from trio_websocket import ConnectionClosed, WebSocketRequest, serve_websocket


async def handler(request: WebSocketRequest) -> None:
    ws = await request.accept()
    try:
        while True:
            await ws.send_message(await ws.get_message())
    except ConnectionClosed:
        pass


async def serve(host: str, port: int) -> None:
    await serve_websocket(handler, host, port, ssl_context=None, max_message_size=1 << 24)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(serve, args.host, args.port)


if __name__ == "__main__":
    main()
