#!/usr/bin/env python3
"""Run the abuse suite against a live eventbus server (standard library only).

    python3 benchmarks/abuse.py                  # every scenario, 10 s each, ~2.5 min
    python3 benchmarks/abuse.py --quick          # a smoke run, ~25 s
    python3 benchmarks/abuse.py --scenarios ping-flood,error-reports --seconds 20
    python3 benchmarks/abuse.py --setting rate=0 --memory-bound 16MiB

Each scenario starts a fresh server (``eventbus serve benchmarks.apps.abuse_app:bus``
from the project's .venv), connects a bystander client that sends ``echo`` requests
at 50/s, measures it idle, then lets one abusive client flood the server and
measures the bystander's round trips beside the server's peak memory
(``/proc/<pid>/status``), its log output and whether new clients still get in.
Traffic goes to 127.0.0.1 only. The table goes to stdout and the figures to
benchmarks/results/abuse-latest.json (``--quick``: quick-abuse.json). Exit status:
0 when every scenario passes, 1 when one fails, 2 when one could not be run.

The code is in the ``abuse`` package beside this file; docs/abuse.md explains the
scenarios and the goals.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from abuse.cli import main  # the package beside this file

if __name__ == "__main__":
    sys.exit(main())
