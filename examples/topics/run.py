"""The topics example: a bus, a publisher service and two subscriber services.

The publisher emits prices and news with acks; the subscribers read both topics
with ``client.subscribe``. Midway the bus restarts (as in a deployment): every
service reconnects by itself, the subscribers join their topics again and fetch a
price snapshot, and the publisher carries on.

Run from the repository root:
    .venv/bin/python examples/topics/run.py               until Ctrl-C, on port 8765
    .venv/bin/python examples/topics/run.py --demo        6 seconds, then a summary
Options: --port N (0: a free port), --duration SECONDS, --restart-after SECONDS.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections import Counter
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from app import make_bus
from publisher import run_publisher
from subscriber import run_subscriber

from eventbus import EventBus

HOST = "127.0.0.1"


async def run_bus(
    bus: EventBus, port: int, restart_after: float | None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the bus; after ``restart_after`` seconds shut it down gracefully (every
    connection is closed with 1001, "going away") and serve again on the same port."""
    started = False
    while True:
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(bus.serve, HOST, port)
            port = listeners[0].socket.getsockname()[1]
            if not started:
                started = True
                task_status.started(port)
            if restart_after is not None:
                await trio.sleep(restart_after)
                restart_after = None
                print("bus: restarting (graceful shutdown, then serving again)", flush=True)
                bus.shutdown()
        await trio.sleep(0.2)  # down for a moment: the services must wait and retry


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


async def main(port: int, duration: float | None, restart_after: float | None) -> bool:
    """Run the example until --duration or Ctrl-C; returns whether Ctrl-C stopped it."""
    bus = make_bus()
    publisher: Counter[str] = Counter()
    subscribers = {"subscriber-1": Counter[str](), "subscriber-2": Counter[str]()}
    with trio.CancelScope() as ctrl_c:
        async with trio.open_nursery() as nursery:
            await nursery.start(cancel_on_ctrl_c, ctrl_c)
            port = await nursery.start(run_bus, bus, port, restart_after)
            url = f"ws://{HOST}:{port}/"
            print(f"bus: listening on {url}", flush=True)
            with trio.move_on_after(duration if duration is not None else float("inf")):
                async with trio.open_nursery() as services:
                    for name, stats in subscribers.items():
                        services.start_soon(run_subscriber, name, url, stats)
                    await trio.sleep(0.3)  # let the subscribers subscribe first
                    services.start_soon(run_publisher, url, publisher)
            # The services have closed their connections; now stop the bus.
            nursery.cancel_scope.cancel()
    if ctrl_c.cancelled_caught:
        print("\ninterrupted")
    print("\nsummary")
    print(f"publisher: {publisher['price acks']} price acks ({publisher['price deliveries']} "
          f"deliveries), {publisher['news acks']} news acks, {publisher['failed']} failed "
          f"requests, {publisher['reconnects']} reconnects")
    for name, stats in subscribers.items():
        print(f"{name}: {stats['prices']} prices, {stats['news']} news, "
              f"{stats['reconnects']} reconnects")
    return ctrl_c.cancelled_caught


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8765, help="bus port (0: a free one)")
    parser.add_argument("--duration", type=float, help="stop after this many seconds")
    parser.add_argument("--demo", action="store_true", help="same as --duration 6")
    parser.add_argument("--restart-after", type=float, default=3.0,
                        help="restart the bus once after this many seconds (default 3)")
    args = parser.parse_args()
    if args.demo and args.duration is None:
        args.duration = 6.0
    return args


if __name__ == "__main__":
    logging.basicConfig(format="(log) %(name)s %(levelname)s: %(message)s")
    args = parse_args()
    try:
        interrupted = trio.run(main, args.port, args.duration, args.restart_after)
    except* KeyboardInterrupt:  # Ctrl-C before main listens for it, or again as it stops
        interrupted = True
    # 130 (128 + SIGINT) is what a shell reports for a program that Ctrl-C ended.
    sys.exit(130 if interrupted else 0)
