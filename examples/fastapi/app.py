"""A FastAPI app with the bus inside it: one asyncio program serves HTTP (uvicorn) and
the bus's WebSocket port (trio, in guest mode on uvicorn's loop).

- The lifespan runs the bus with ``eventbus.asyncio.run_bus``: the bus listens before
  the app takes its first request, and shuts down gracefully (its clients get 1001)
  when uvicorn stops.
- ``POST /announce`` with ``{"text": ...}`` publishes an ``announcement`` to the
  ``announcements`` room through the handle (``await running.publish(...)``).
- ``GET /`` is a page that imports ``eventbus.js`` from the bus's own port and shows the
  announcements as they come.
- Clients may join ``announcements`` and nothing else, and may not publish to it: only
  the app announces. Browsers may connect from the app's pages only
  (``allowed_origins``): the page is of the app's origin, not the bus's.

Run it from the repository root (HTTP on 8000, the bus on 8765):
    .venv/bin/python examples/fastapi/app.py [--http-port N] [--bus-port N]
or under uvicorn's command line (the bus's port from EVENTBUS_PORT, the origins of the
pages that may connect from EVENTBUS_ORIGINS, comma-separated):
    .venv/bin/python -m uvicorn app:app --app-dir examples/fastapi
"""

from __future__ import annotations

import argparse
import html
import os
import socket
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from eventbus import Connection, EventBus
from eventbus.asyncio import EmbeddedBus, run_bus

ROOM = "announcements"
PAGE = (Path(__file__).resolve().parent / "index.html").read_text(encoding="utf-8")


class Announcement(BaseModel):
    """The body of ``POST /announce``."""

    text: str = Field(min_length=1, max_length=1000)


def make_bus(page_origins: Sequence[str]) -> EventBus:
    bus = EventBus(allowed_origins=page_origins)

    @bus.authorize_join
    def may_join(sock: Connection, room: str) -> bool:
        return room == ROOM

    @bus.authorize_publish
    def may_publish(sock: Connection, room: str, event: str) -> bool:
        return False  # announcements come from the app (POST /announce) only

    return bus


def create_app(
    bus_host: str = "127.0.0.1", bus_port: int = 8765,
    page_origins: Sequence[str] = ("http://127.0.0.1:8000", "http://localhost:8000"),
) -> FastAPI:
    """The app; its bus listens on ``bus_host:bus_port`` (0 picks a free port) and
    lets browsers connect from ``page_origins``, the app's own."""
    bus = make_bus(page_origins)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The bus serves for as long as the app does: listening before the first
        # request, shut down gracefully (clients get 1001) once uvicorn stops.
        async with run_bus(bus, bus_host, bus_port) as running:
            app.state.bus = running
            print(f"bus: listening on {running.url}", flush=True)
            yield
        print("bus: stopped", flush=True)

    app = FastAPI(title="eventbus in FastAPI", lifespan=lifespan)

    @app.post("/announce")
    async def announce(announcement: Announcement, request: Request) -> dict[str, int]:
        running: EmbeddedBus = request.app.state.bus
        published = await running.publish(ROOM, "announcement", {"text": announcement.text})
        print(f"app: announced {announcement.text!r} (seq {published.position.seq})",
              flush=True)
        return {"seq": published.position.seq}

    @app.get("/", response_class=HTMLResponse)
    async def page(request: Request) -> str:
        running: EmbeddedBus = request.app.state.bus
        return PAGE.replace("{{BUS_URL}}", html.escape(running.url))

    return app


#: For ``uvicorn app:app``, configured by the environment.
app = create_app(
    os.environ.get("EVENTBUS_HOST", "127.0.0.1"), int(os.environ.get("EVENTBUS_PORT", "8765")),
    os.environ.get("EVENTBUS_ORIGINS", "http://127.0.0.1:8000,http://localhost:8000").split(","))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--http-port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--bus-port", type=int, default=8765, help="0 picks a free port")
    args = parser.parse_args(argv)
    # The HTTP socket first: its port (picked, with 0) is the pages' origin, which the
    # bus must know before it serves.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.http_port))
    http_port = sock.getsockname()[1]
    origins = [f"http://127.0.0.1:{http_port}", f"http://localhost:{http_port}"]
    server = uvicorn.Server(uvicorn.Config(
        create_app(bus_port=args.bus_port, page_origins=origins), log_level="info"))
    print(f"app: open http://127.0.0.1:{http_port}/ in a browser", flush=True)
    try:
        # At Ctrl-C, uvicorn stops taking requests and runs the lifespan's exit (the
        # bus shuts down gracefully); then it raises the KeyboardInterrupt again.
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        return 130  # what a shell reports for a program that Ctrl-C ended
    return 0


if __name__ == "__main__":
    sys.exit(main())
