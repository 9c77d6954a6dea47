"""The publisher service: emits prices (through the bus's handler, with an ack) and
news (a publish to the ``news`` topic, with an ack), until cancelled.

Run alone against a running bus:
    .venv/bin/python examples/topics/publisher.py ws://127.0.0.1:8765/
"""

from __future__ import annotations

import logging
import random
import signal
import sys
from collections import Counter

import trio

import eventbus

SYMBOLS = {"ACME": 101.0, "GLOBEX": 54.2, "INITECH": 12.9}
HEADLINES = [
    "ACME opens a new anvil factory",
    "GLOBEX announces a hammock division",
    "INITECH moves to a new office, staplers included",
    "Markets calm as coyotes stay home",
]


async def run_publisher(url: str, stats: Counter[str], interval: float = 0.05) -> None:
    """Publish until cancelled; count acks and failures in ``stats``."""
    prices = dict(SYMBOLS)
    rng = random.Random(1)
    headers = {"Authorization": "Bearer publisher-secret"}
    backoff = eventbus.Backoff(initial=0.1, cap=1.0)
    async with eventbus.connect(url, headers=headers, reconnect=backoff) as client:

        @client.on_reconnect
        def reconnected() -> None:
            stats["reconnects"] += 1
            print("publisher: reconnected", flush=True)

        tick = 0
        while True:
            symbol = rng.choice(list(prices))
            prices[symbol] = round(prices[symbol] * rng.uniform(0.99, 1.01), 2)
            try:
                # call() waits for the handler's answer: that is the ack.
                update = {"symbol": symbol, "price": prices[symbol]}
                ack = await client.call("prices.update", update)
                stats["price acks"] += 1
                stats["price deliveries"] += ack["delivered"]
                if tick % 20 == 0:
                    headline = HEADLINES[tick // 20 % len(HEADLINES)]
                    # publish() is acked with the message's position in the topic.
                    position = await client.publish("news", "headline", headline)
                    stats["news acks"] += position is not None
            except (eventbus.RequestError, eventbus.ConnectionClosed, eventbus.CallTimeout) as exc:
                # While the bus restarts, requests fail (unavailable, or the connection
                # was lost under them); nothing is retried for us: log it and go on.
                stats["failed"] += 1
                print(f"publisher: request failed: {exc}", flush=True)
            tick += 1
            await trio.sleep(interval)


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
    """Run the publisher until Ctrl-C; returns whether Ctrl-C stopped it."""
    with trio.CancelScope() as ctrl_c:
        async with trio.open_nursery() as nursery:
            await nursery.start(cancel_on_ctrl_c, ctrl_c)
            await run_publisher(url, Counter())
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
