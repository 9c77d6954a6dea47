"""The chat example: the bus, the page server and the bot, in one trio nursery.

Run from the repository root:
    .venv/bin/python examples/chat/run.py            then open the printed URL
    .venv/bin/python examples/chat/run.py --demo     a scripted visitor chats with the bot
                                                     for a few seconds, then a summary
Options: --http-port N and --bus-port N (0: a free port; defaults 8000 and 8765),
--duration SECONDS, --no-bot.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import quote

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from app import make_bus
from bot import run_bot
from static_server import StaticSite

import eventbus

HOST = "127.0.0.1"


async def visit(bus_url: str, page_url: str, stats: Counter[str]) -> None:
    """What --demo does: fetch the page like a browser would, then chat with the bot
    from Python, and check the replies."""
    for path in ("/", "/chat.js", "/eventbus.js", "/config.js"):
        status, size = await http_get(page_url, path)
        print(f"visitor: GET {path} -> {status} ({size} bytes)", flush=True)
        stats["pages"] += status == 200
    replies = trio.Event()
    seen: list[dict[str, Any]] = []
    async with eventbus.connect(f"{bus_url}?nick={quote('visitor')}") as client:

        @client.on("message")
        def on_message(message: dict[str, Any]) -> None:
            seen.append(message)
            print(f"visitor: received {message['nick']}: {message['text']}", flush=True)
            if message["nick"] == "bot" and len([m for m in seen if m["nick"] == "bot"]) >= 3:
                replies.set()

        joined = await client.call("chat.join", {"room": "lobby"})
        print(f"visitor: joined #lobby with {', '.join(joined['members'])}", flush=True)
        for text in ("hello bot!", "!roll"):
            ack = await client.call("chat.say", {"text": text})
            print(f"visitor: said {text!r} (acked as message {ack['id']})", flush=True)
            stats["acks"] += 1
        with trio.move_on_after(5):
            await replies.wait()
        stats["bot replies"] = len([m for m in seen if m["nick"] == "bot"])


async def http_get(base: str, path: str) -> tuple[int, int]:
    host, port = base.removeprefix("http://").rstrip("/").split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), len(body)


async def cancel_on_ctrl_c(
    scope: trio.CancelScope, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Cancel ``scope`` at Ctrl-C (SIGINT). Received here, Ctrl-C stops the example by
    cancellation, at each task's next checkpoint, rather than as a KeyboardInterrupt
    raised wherever the code happens to be (in the middle of a print, say)."""
    with trio.open_signal_receiver(signal.SIGINT) as signals:
        task_status.started()
        async for _ in signals:
            scope.cancel()


async def main(http_port: int, bus_port: int, duration: float | None, demo: bool,
               bot: bool) -> bool:
    """Run the example until --duration, the demo's end or Ctrl-C; returns whether
    Ctrl-C stopped it."""
    bot_stats: Counter[str] = Counter()
    visitor: Counter[str] = Counter()
    site = StaticSite("")
    with trio.CancelScope() as ctrl_c:
        async with trio.open_nursery() as nursery:
            await nursery.start(cancel_on_ctrl_c, ctrl_c)
            # The page server first: the bus must know the page's origin to allow it.
            http_listeners = await trio.open_tcp_listeners(http_port, host=HOST)
            http_port = http_listeners[0].socket.getsockname()[1]
            origins = [f"http://{HOST}:{http_port}", f"http://localhost:{http_port}"]
            bus = make_bus(allowed_origins=origins)
            listeners = await nursery.start(bus.serve, HOST, bus_port)
            bus_url = f"ws://{HOST}:{listeners[0].socket.getsockname()[1]}/"
            site.bus_url = bus_url
            nursery.start_soon(trio.serve_listeners, site.handle, http_listeners)
            page_url = f"http://{HOST}:{http_port}/"
            print(f"chat: bus on {bus_url}", flush=True)
            print(f"chat: open {page_url} in a browser", flush=True)
            with trio.move_on_after(duration if duration is not None else float("inf")):
                async with trio.open_nursery() as clients:
                    if bot:
                        await clients.start(lambda task_status: run_bot(
                            bus_url, stats=bot_stats, task_status=task_status))
                    if demo:
                        await visit(bus_url, page_url, visitor)
                        clients.cancel_scope.cancel()
            nursery.cancel_scope.cancel()
    if ctrl_c.cancelled_caught:
        print("\ninterrupted")
    print("\nsummary")
    print(f"page server: {site.requests} requests")
    if bot:
        print(f"bot: saw {bot_stats['messages seen']} messages, sent {bot_stats['replies']} "
              "replies")
    if demo:
        print(f"visitor: {visitor['pages']} pages fetched, {visitor['acks']} messages acked, "
              f"{visitor['bot replies']} bot replies received")
    return ctrl_c.cancelled_caught


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--http-port", type=int, default=8000, help="page port (0: free)")
    parser.add_argument("--bus-port", type=int, default=8765, help="bus port (0: free)")
    parser.add_argument("--duration", type=float, help="stop after this many seconds")
    parser.add_argument("--demo", action="store_true",
                        help="a scripted visitor chats with the bot, then everything stops")
    parser.add_argument("--no-bot", dest="bot", action="store_false", help="no bot")
    args = parser.parse_args()
    if args.demo and args.duration is None:
        args.duration = 15.0  # a bound, in case something hangs
    return args


if __name__ == "__main__":
    logging.basicConfig(format="(log) %(name)s %(levelname)s: %(message)s")
    args = parse_args()
    try:
        interrupted = trio.run(main, args.http_port, args.bus_port, args.duration, args.demo,
                               args.bot)
    except* KeyboardInterrupt:  # Ctrl-C before main listens for it, or again as it stops
        interrupted = True
    # 130 (128 + SIGINT) is what a shell reports for a program that Ctrl-C ended.
    sys.exit(130 if interrupted else 0)
