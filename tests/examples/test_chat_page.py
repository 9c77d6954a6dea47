"""The chat page of examples/chat in a real headless Chromium, as two people.

Starts ``examples/chat/run.py`` on free ports, then ``node chat_screenshot.mjs``, which
opens the page twice (ada and bob) with playwright-core and the system's Chromium,
has them exchange messages and ask the bot to roll, and takes a screenshot. The
assertions are here.

The screenshot goes to a temporary directory; with ``UPDATE_SCREENSHOTS=1`` in the
environment it also replaces ``docs/images/chat.png``, the picture in the docs.

Needs node, chromium and tests/browser/node_modules (``npm ci --prefix tests/browser``).
Without them the test is skipped, with the reason, except under CI (``CI=true``),
where that is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
SCREENSHOT = ROOT / "docs" / "images" / "chat.png"

pytestmark = pytest.mark.browser


def _tools() -> tuple[str, str]:
    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium")
    node = shutil.which("node")
    missing = [name for name, path in (("node", node), ("chromium", chromium)) if not path]
    if not (ROOT / "tests" / "browser" / "node_modules" / "playwright-core").is_dir():
        missing.append("tests/browser/node_modules (run npm ci --prefix tests/browser)")
    if missing:
        reason = f"the chat page test needs {', '.join(missing)}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    assert node is not None
    assert chromium is not None
    return node, chromium


def _start_chat() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "examples/chat/run.py", "--http-port", "0", "--bus-port", "0",
         "--duration", "60"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 15
    lines = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("chat: open "):
            return proc, line.split()[2]
    proc.kill()
    pytest.fail("examples/chat/run.py did not print its URL:\n" + "".join(lines))


@pytest.mark.timeout(90)
def test_two_people_chat_in_chromium(tmp_path: Path) -> None:
    node, chromium = _tools()
    proc, url = _start_chat()
    out = tmp_path / "chat.png"
    try:
        run = subprocess.run(
            [node, str(HERE / "chat_screenshot.mjs"), url, str(out)], capture_output=True,
            text=True, timeout=60, check=False, env={**os.environ, "CHROMIUM": chromium},
        )
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            server_output, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            server_output, _ = proc.communicate()
    detail = (f"node exit {run.returncode}\nstdout:\n{run.stdout}\nstderr:\n{run.stderr}\n"
              f"chat server:\n{server_output}")
    assert run.returncode == 0, detail
    result: dict[str, Any] = json.loads(run.stdout)
    assert "failure" not in result, detail

    # Each person sees the other's messages, the bot's greetings and both rolls.
    for page in ("ada", "bob"):
        lines = result[page]
        assert "ada: Hi bob! Did the release go out?" in lines, detail
        assert "bob: It did, ten minutes ago. Dashboards are all green." in lines, detail
        assert any(line.startswith("bot: ada rolled a ") for line in lines), detail
        assert any(line.startswith("bot: bob rolled a ") for line in lines), detail
        assert "bot: Welcome to #lobby, bob! Try !help." in lines, detail
    assert "* bob joined #lobby" in result["ada"], detail
    assert [m.strip() for m in result["membersAda"]] == ["aada (you)", "bbob", "bbot"], detail
    assert result["roomsAda"][0].replace(" ", "") == "#lobby3", detail
    assert result["status"] == "online", detail
    assert not [line for line in result["console"] if "error" in line], detail

    # A real picture: the PNG signature and the viewport's size.
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", detail
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1120, 700), detail
    assert len(data) > 20_000, detail
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        shutil.copyfile(out, SCREENSHOT)
