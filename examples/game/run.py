"""The game example: the game server (bus plus tick loop) and three headless bots.

Run from the repository root:
    .venv/bin/python examples/game/run.py               until Ctrl-C, on port 8766
    .venv/bin/python examples/game/run.py --demo        5 seconds, then a summary
Options: --port N (0: a free port), --duration SECONDS, --bots N.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from app import make_game
from bot import BotStats, run_bot

HOST = "127.0.0.1"
NAMES = ["ada", "bob", "cy", "dee", "eve", "fay", "gus", "hal"]


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


async def main(port: int, duration: float | None, bots: int) -> bool:
    """Run the example until --duration or Ctrl-C; returns whether Ctrl-C stopped it."""
    game = make_game(seed=7)
    players = [BotStats(NAMES[i % len(NAMES)]) for i in range(bots)]
    with trio.CancelScope() as ctrl_c:
        async with trio.open_nursery() as nursery:
            await nursery.start(cancel_on_ctrl_c, ctrl_c)
            listeners = await nursery.start(game.bus.serve, HOST, port)
            url = f"ws://{HOST}:{listeners[0].socket.getsockname()[1]}/"
            print(f"game: listening on {url} ({game.tick_rate} ticks per second)", flush=True)
            with trio.move_on_after(duration if duration is not None else float("inf")):
                async with trio.open_nursery() as clients:
                    clients.start_soon(game.run)
                    for stats in players:
                        clients.start_soon(run_bot, url, stats)
                    while True:
                        await trio.sleep(1)
                        board = ", ".join(f"{p.name} {p.score}" for p in players)
                        print(f"tick {game.tick}: scores {board}", flush=True)
            nursery.cancel_scope.cancel()
    if ctrl_c.cancelled_caught:
        print("\ninterrupted")
    print("\nsummary")
    print(f"server: {game.tick} ticks, {game.frames_sent} state frames handed to players")
    for p in players:
        size = p.bytes // p.frames if p.frames else 0
        print(f"{p.name}: {p.frames} binary state frames ({size} bytes each), last tick "
              f"{p.last_tick}, {p.inputs} inputs sent, score {p.score}, {p.scores_seen} "
              f"score events, {p.missed} states dropped by the server")
    return ctrl_c.cancelled_caught


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8766, help="port (0: a free one)")
    parser.add_argument("--duration", type=float, help="stop after this many seconds")
    parser.add_argument("--demo", action="store_true", help="same as --duration 5")
    parser.add_argument("--bots", type=int, default=3, help="how many bots play (default 3)")
    args = parser.parse_args()
    if args.demo and args.duration is None:
        args.duration = 5.0
    return args


if __name__ == "__main__":
    logging.basicConfig(format="(log) %(name)s %(levelname)s: %(message)s")
    args = parse_args()
    try:
        interrupted = trio.run(main, args.port, args.duration, args.bots)
    except* KeyboardInterrupt:  # Ctrl-C before main listens for it, or again as it stops
        interrupted = True
    # 130 (128 + SIGINT) is what a shell reports for a program that Ctrl-C ended.
    sys.exit(130 if interrupted else 0)
