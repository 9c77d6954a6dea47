"""The python-socketio peer: AsyncServer on aiohttp with uvloop.

    python benchmarks/apps/socketio_app.py --port 8765

Events: ``echo`` (acked with its data), ``join`` (room; acked), ``publish``
(room, data: emitted as ``msg`` to the room except the sender; acked).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any

import socketio
import uvloop
from aiohttp import web


def make_app() -> web.Application:
    sio = socketio.AsyncServer(
        async_mode="aiohttp",
        transports=["websocket"],
        cors_allowed_origins="*",
        logger=False,
        engineio_logger=False,
    )
    app = web.Application()
    sio.attach(app)

    @sio.on("echo")
    async def echo(sid: str, data: Any) -> Any:
        return data

    @sio.on("join")
    async def join(sid: str, room: str) -> bool:
        await sio.enter_room(sid, room)
        return True

    @sio.on("publish")
    async def publish(sid: str, room: str, data: Any) -> bool:
        await sio.emit("msg", data, room=room, skip_sid=sid)
        return True

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    web.run_app(make_app(), host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
