"""Run the room scripts one after another: join and leave, broadcast except the
sender, room acks with ``bus.call``, and authorization hooks.

Run from the repository root: .venv/bin/python examples/rooms/run.py
Each script starts its own bus on a free port of 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))

import authorization
import broadcast
import join_leave
import room_acks

SCRIPTS = [join_leave, broadcast, room_acks, authorization]


def main() -> None:
    logging.basicConfig(format="(log) %(name)s %(levelname)s: %(message)s")
    for script in SCRIPTS:
        title = (script.__doc__ or script.__name__).strip().splitlines()[0]
        print(f"\n== {script.__name__}.py: {title}", flush=True)
        trio.run(script.main)
    print("\nall room scripts finished")


if __name__ == "__main__":
    main()
