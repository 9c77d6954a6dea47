"""Smoke test of the abuse suite: ``benchmarks/abuse.py`` runs one short flood end
to end against a real server (a subprocess on 127.0.0.1) and writes its figures.

It checks that the suite works, not that the server passes: the verdict may be
either. The full suite (about 2.5 minutes) is run by hand; see docs/abuse.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(60)
def test_one_short_flood_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "abuse.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "abuse.py"), "--quick",
         "--scenarios", "ping-flood", "--seconds", "0.5", "--eventbus-python", sys.executable,
         "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=50, check=False,
    )
    detail = f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    assert proc.returncode in (0, 1), detail  # 2: a scenario could not be run
    (record,) = json.loads(out.read_text())["scenarios"]
    assert record["result"]["verdict"] in ("PASS", "FAIL"), detail
    assert record["idle"]["requests"] > 0, detail
    assert record["flood"]["requests"] > 0, detail
    assert record["abuser"]["units"] > 0, detail
    assert record["peak_rss_kib"] > 0
    assert "| ping-flood |" in proc.stdout
    assert (tmp_path / "tmp" / "abuse-ping-flood.log").is_file()
