"""A subscriber service: ``client.subscribe("prices", "news")`` and print what comes.

On a reconnect the client joins its topics again by itself; events published while
it was away are not replayed (v1 servers keep no history), so it asks the bus for
a snapshot of the prices (a call, answered by the bus's handler).

Run alone against a running bus:
    .venv/bin/python examples/topics/subscriber.py ws://127.0.0.1:8765/
"""

from __future__ import annotations

import logging
import signal
import sys
from collections import Counter
from typing import Any

import trio

import eventbus


async def run_subscriber(
    name: str, url: str, stats: Counter[str], *, verbose: bool = False
) -> None:
    """Print (or count) the events of both topics until cancelled."""
    headers = {"Authorization": "Bearer reader-secret"}
    backoff = eventbus.Backoff(initial=0.1, cap=1.0)
    async with eventbus.connect(url, headers=headers, reconnect=backoff) as client:
        prices: dict[str, float] = await client.call("prices.snapshot")

        @client.on_reconnect
        async def reconnected() -> None:
            stats["reconnects"] += 1
            prices.update(await client.call("prices.snapshot"))
            print(f"{name}: reconnected, topics joined again, {len(prices)} prices in the "
                  "snapshot", flush=True)

        async with client.subscribe("prices", "news") as events:
            print(f"{name}: subscribed to prices and news", flush=True)
            async for event in events:
                handle(name, event.event, event.data, prices, stats, verbose)


def handle(
    name: str, kind: str, data: Any, prices: dict[str, float], stats: Counter[str],
    verbose: bool,
) -> None:
    if kind == "price":
        prices[data["symbol"]] = data["price"]
        stats["prices"] += 1
        if verbose:
            print(f"{name}: {data['symbol']} {data['price']:.2f}", flush=True)
    elif kind == "headline":
        stats["news"] += 1
        print(f"{name}: news: {data}", flush=True)


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


async def main(url: str) -> bool:
    """Run the subscriber until Ctrl-C; returns whether Ctrl-C stopped it."""
    with trio.CancelScope() as ctrl_c:
        async with trio.open_nursery() as nursery:
            await nursery.start(cancel_on_ctrl_c, ctrl_c)
            await run_subscriber("subscriber", url, Counter(), verbose=True)
            nursery.cancel_scope.cancel()
    return ctrl_c.cancelled_caught


if __name__ == "__main__":
    logging.basicConfig(format="(log) %(name)s %(levelname)s: %(message)s")
    try:
        interrupted = trio.run(main, sys.argv[1] if len(sys.argv) > 1 else "ws://127.0.0.1:8765/")
    except* KeyboardInterrupt:  # Ctrl-C before main listens for it, or again as it stops
        interrupted = True
    # 130 (128 + SIGINT) is what a shell reports for a program that Ctrl-C ended.
    sys.exit(130 if interrupted else 0)
