"""A small static file server for the chat page, on trio and h11.

It serves the files in ``static/``, the browser client ``/eventbus.js`` (the copy
that ships inside the eventbus package), and ``/config.js``, which tells the page
where the bus listens. Only GET and HEAD; one request per connection.
"""

from __future__ import annotations

import json
import mimetypes
from importlib import resources
from pathlib import Path

import h11
import trio

STATIC = Path(__file__).resolve().parent / "static"


class StaticSite:
    def __init__(self, bus_url: str) -> None:
        self.bus_url = bus_url
        self.requests = 0

    def lookup(self, path: str) -> tuple[int, bytes, str]:
        """Status, body and content type for a path."""
        if path == "/":
            path = "/index.html"
        if path == "/eventbus.js":
            script = resources.files("eventbus").joinpath("static/eventbus.js")
            return 200, script.read_bytes(), "text/javascript; charset=utf-8"
        if path == "/config.js":
            body = f"export const BUS_URL = {json.dumps(self.bus_url)};\n"
            return 200, body.encode(), "text/javascript; charset=utf-8"
        file = (STATIC / path.lstrip("/")).resolve()
        if file.is_relative_to(STATIC) and file.is_file():
            kind = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
            if kind.startswith("text/") or kind.endswith("javascript"):
                kind += "; charset=utf-8"
            return 200, file.read_bytes(), kind
        return 404, b"not found\n", "text/plain; charset=utf-8"

    async def handle(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            with trio.move_on_after(10):
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        data = await stream.receive_some(65536)
                        if not data:
                            return
                        conn.receive_data(data)
                        continue
                    if not isinstance(event, h11.Request):
                        return
                    break
                self.requests += 1
                path = event.target.decode("latin-1").split("?", 1)[0]
                if event.method not in (b"GET", b"HEAD"):
                    status, body, kind = 405, b"method not allowed\n", "text/plain"
                else:
                    status, body, kind = self.lookup(path)
                headers = [("content-type", kind), ("content-length", str(len(body))),
                           ("cache-control", "no-store"), ("connection", "close")]
                data = conn.send(h11.Response(status_code=status, headers=headers)) or b""
                if event.method != b"HEAD":
                    data += conn.send(h11.Data(data=body)) or b""
                data += conn.send(h11.EndOfMessage()) or b""
                await stream.send_all(data)
        except (h11.RemoteProtocolError, trio.BrokenResourceError, OSError):
            pass
        finally:
            await trio.aclose_forcefully(stream)
