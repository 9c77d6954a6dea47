"""The code of the how-to guides (docs/howto/*.py) runs and prints what the pages show.

Each script serves on a free port of 127.0.0.1 or uses eventbus.testing, and stops by
itself; its output must equal the ``.out`` file beside it, which the page includes.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

HOWTO = Path(__file__).resolve().parents[2] / "docs" / "howto"
SCRIPTS = sorted(path.stem for path in HOWTO.glob("*.py"))


def test_every_script_is_on_a_page() -> None:
    pages = "".join(path.read_text() for path in HOWTO.glob("*.md"))
    assert len(SCRIPTS) >= 5
    for script in SCRIPTS:
        assert (HOWTO / f"{script}.out").is_file(), script
        assert f"{{literalinclude}} {script}.py" in pages, script
        assert f"{{literalinclude}} {script}.out" in pages, script


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_prints_what_the_page_shows(script: str) -> None:
    if script == "tls" and importlib.util.find_spec("trustme") is None:
        pytest.skip("trustme is not installed")
    proc = subprocess.run(
        [sys.executable, f"{script}.py"], cwd=HOWTO, capture_output=True, text=True,
        timeout=60, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (HOWTO / f"{script}.out").read_text(), proc.stderr
