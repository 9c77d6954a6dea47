"""CI smoke test of the benchmark suite: ``benchmarks/run.py --quick`` against eventbus.

It runs every workload (W1-W5) at tiny sizes through the real load generator (Node
with ``ws``) and checks that each run succeeded with no losses: every ack matched,
every room delivery arrived once, in order, and never to its sender. Needs node and
npm; without them the test is skipped, except under CI (``CI=true``), where that is a
failure. When benchmarks/node_modules is missing or older than package-lock.json,
run.py first runs ``npm ci`` there (gitignored; once), and the test says so on the
terminal before it starts.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
WORKLOADS = {"W1", "W2", "W3", "W4", "W5"}


def _require_node() -> None:
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if not missing:
        return
    reason = f"{' and '.join(missing)} not installed: the benchmark load generator runs on Node"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def _announce_npm_ci(capsys: pytest.CaptureFixture[str]) -> None:
    """Say so when run.py is about to write benchmarks/node_modules (it checks the same
    stamp: node_modules/.bench-installed holds the hash of package-lock.json)."""
    stamp = BENCHMARKS / "node_modules" / ".bench-installed"
    digest = hashlib.sha256((BENCHMARKS / "package-lock.json").read_bytes()).hexdigest()
    if stamp.is_file() and stamp.read_text() == digest:
        return
    with capsys.disabled():
        print("\ntests/test_benchmarks_quick.py: benchmarks/node_modules is missing or stale; "
              "running `npm ci` there first (once; takes a while)", flush=True)


# The quick run itself takes about 10 s; the longer limit leaves room for `npm ci`.
@pytest.mark.timeout(240)
def test_quick_benchmark_against_eventbus(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    _require_node()
    _announce_npm_ci(capsys)
    out = tmp_path / "quick.json"
    proc = subprocess.run(
        [
            sys.executable, str(BENCHMARKS / "run.py"), "--quick",
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
