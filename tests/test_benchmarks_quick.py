"""CI smoke test of the benchmark suite: ``benchmarks/run.py --quick`` against eventbus.

It runs every workload (W1-W5) at tiny sizes through the real load generator (Node
with ``ws``) and checks that each run succeeded with no losses: every ack matched,
every room delivery arrived once, in order, and never to its sender. Needs node and
npm (``npm ci`` runs in benchmarks/ if node_modules is missing); without them the test
is skipped, except under CI (``CI=true``), where that is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WORKLOADS = {"W1", "W2", "W3", "W4", "W5"}


def _require_node() -> None:
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if not missing:
        return
    reason = f"{' and '.join(missing)} not installed: the benchmark load generator runs on Node"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


# The quick run itself takes about 10 s; the longer limit leaves room for `npm ci`.
@pytest.mark.timeout(240)
def test_quick_benchmark_against_eventbus(tmp_path: Path) -> None:
    _require_node()
    out = tmp_path / "quick.json"
    proc = subprocess.run(
        [
            sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick",
            "--servers", "eventbus", "--eventbus-python", sys.executable,
            "--out", str(out), "--no-report",
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=230, check=False,
    )
    detail = f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
    assert proc.returncode == 0, detail
    runs = json.loads(out.read_text())["runs"]
    assert {run["workload"] for run in runs} == WORKLOADS, detail
    for run in runs:
        name = f"{run['workload']} against {run['server']}"
        assert run["server"] == "eventbus"
        assert run["ok"], f"{name} failed: {run.get('errors')}\n{detail}"
        assert run["error_count"] == 0, f"{name}: {run['errors']}"
        assert all(count == 0 for count in run["losses"].values()), f"{name}: {run['losses']}"
    metrics = {run["workload"]: run["metrics"] for run in runs}
    assert metrics["W1"]["acks_total"] >= 200
    assert metrics["W1"]["acks_per_s"] > 0
    for workload in ("W2", "W5"):
        assert metrics[workload]["deliveries"] == metrics[workload]["deliveries_expected"] > 0
    assert metrics["W3"]["bytes_per_conn"] is not None
    assert metrics["W4"]["deliveries"] == metrics["W4"]["deliveries_expected"] > 0
    assert metrics["W4"]["mb_per_s"] > 0
