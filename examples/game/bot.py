"""A headless player: joins the arena over msgpack, decodes the binary state frames,
and steers toward the coin by sending inputs (fire and forget, no ack: a lost input
is replaced by the next one 100 ms later).

Run alone against a running game: .venv/bin/python examples/game/bot.py ws://127.0.0.1:8766/
"""

from __future__ import annotations

import logging
import math
import signal
import sys
from pathlib import Path

import attrs
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from app import unpack_state

import eventbus


@attrs.define
class BotStats:
    name: str
    frames: int = 0
    bytes: int = 0
    last_tick: int = 0
    score: int = 0
    inputs: int = 0
    missed: int = 0
    scores_seen: int = 0


async def run_bot(url: str, stats: BotStats, reaction: float = 0.1) -> None:
    """Play until cancelled."""
    async with eventbus.connect(url, codec="msgpack") as client:
        me = await client.call("join", stats.name)
        target: tuple[float, float] | None = None
        position: tuple[float, float] | None = None

        @client.on("state")
        def on_state(blob: bytes) -> None:
            nonlocal target, position
            tick, coin, players = unpack_state(blob)
            stats.frames += 1
            stats.bytes += len(blob)
            stats.last_tick = tick
            target = coin
            for player_id, x, y, score in players:
                if player_id == me["id"]:
                    position = (x, y)
                    stats.score = score

        @client.on("scored")
        def on_scored(data: dict[str, object]) -> None:
            stats.scores_seen += 1

        @client.on_gap
        def on_gap(room: str | None, count: int) -> None:
            stats.missed += count  # volatile states the server dropped for us

        while True:
            await trio.sleep(reaction)
            if target is None or position is None:
                continue
            dx, dy = target[0] - position[0], target[1] - position[1]
            distance = math.hypot(dx, dy) or 1.0
            await client.emit("input", {"dx": dx / distance, "dy": dy / distance})
            stats.inputs += 1


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
    """Play until Ctrl-C, then print what happened; returns whether Ctrl-C stopped it."""
    stats = BotStats("bot")
    with trio.CancelScope() as ctrl_c:
        async with trio.open_nursery() as nursery:
            await nursery.start(cancel_on_ctrl_c, ctrl_c)
            await run_bot(url, stats)
            nursery.cancel_scope.cancel()
    print(stats)
    return ctrl_c.cancelled_caught


if __name__ == "__main__":
    logging.basicConfig(format="(log) %(name)s %(levelname)s: %(message)s")
    try:
        interrupted = trio.run(main, sys.argv[1] if len(sys.argv) > 1 else "ws://127.0.0.1:8766/")
    except* KeyboardInterrupt:  # Ctrl-C before main listens for it, or again as it stops
        interrupted = True
    # 130 (128 + SIGINT) is what a shell reports for a program that Ctrl-C ended.
    sys.exit(130 if interrupted else 0)
