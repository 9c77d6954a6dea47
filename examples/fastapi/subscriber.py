"""An asyncio service that subscribes to the app's announcements and prints them.

It uses the asyncio client, ``eventbus.asyncio.connect``: the same API as the trio
client (``async with client.subscribe(room) as events: async for event in events``).
When the app stops, the bus closes the connection with 1001 (going away), and the
client reconnects with backoff until the bus is back.

Run it from the repository root, with the app running:
    .venv/bin/python examples/fastapi/subscriber.py ws://127.0.0.1:8765/
Options: ``--count N`` exits after N announcements.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

import eventbus
import eventbus.asyncio

ROOM = "announcements"


async def subscribe(url: str, count: int | None) -> None:
    backoff = eventbus.Backoff(initial=0.1, cap=1.0)
    async with eventbus.asyncio.connect(url, reconnect=backoff) as client:

        @client.on_disconnect
        def lost(error: eventbus.ConnectionClosed) -> None:
            print(f"subscriber: disconnected ({error.close_code} {error.reason})", flush=True)

        @client.on_reconnect
        def back() -> None:
            print("subscriber: reconnected", flush=True)

        async with client.subscribe(ROOM) as events:
            print(f"subscriber: subscribed to {ROOM}", flush=True)
            received = 0
            async for event in events:
                print(f"subscriber: {event.event} #{event.seq}: "
                      f"{event.data['text']}", flush=True)
                received += 1
                if received == count:
                    return


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", default="ws://127.0.0.1:8765/")
    parser.add_argument("--count", type=int, default=None,
                        help="exit after this many announcements")
    args = parser.parse_args(argv)
    try:
        asyncio.run(subscribe(args.url, args.count))
    except KeyboardInterrupt:
        return 130  # what a shell reports for a program that Ctrl-C ended
    return 0


if __name__ == "__main__":
    logging.basicConfig(format="(log) %(name)s %(levelname)s: %(message)s")
    sys.exit(main())
