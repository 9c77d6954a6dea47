"""Smoke tests of examples/fastapi: the app under uvicorn (its lifespan runs the bus),
the asyncio subscriber, ``POST /announce`` with httpx, and the page in headless
Chromium.

Everything runs as a person would run it, from the repository root with the venv's
python, on free ports of 127.0.0.1 (uvicorn's ``--port 0``, ``EVENTBUS_PORT=0``), and
is checked from what the processes print. Each test has a hard deadline; the output
is shown in full when an assertion fails.

The browser test needs node, chromium and tests/browser/node_modules (``npm ci
--prefix tests/browser``); without them it is skipped, with the reason, except under
CI (``CI=true``), where that is a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import httpx
import pytest
import trio

from .test_examples import Output, stop

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
UVICORN = [sys.executable, "-m", "uvicorn", "app:app", "--app-dir", "examples/fastapi",
           "--host", "127.0.0.1", "--port", "0"]
LISTENING = r"bus: listening on (ws://127\.0\.0\.1:\d+/)"
#: What uvicorn's command line prints once it serves, and what app.py prints.
UVICORN_SERVING = r"INFO: +Uvicorn running on (http://127\.0\.0\.1:\d+) \(Press CTRL\+C to quit\)"
APP_PY = [sys.executable, "examples/fastapi/app.py", "--http-port", "0", "--bus-port", "0"]
APP_PY_SERVING = r"app: open (http://127\.0\.0\.1:\d+)/ in a browser"


@attrs.frozen
class App:
    process: trio.Process
    output: Output
    http_url: str
    bus_url: str


async def start(command: list[str], **env: str) -> tuple[trio.Process, Output]:
    process = await trio.lowlevel.open_process(
        command, cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT)
    return process, Output(process.stdout)


@asynccontextmanager
async def serving(command: list[str], http: str, **env: str) -> AsyncIterator[App]:
    """The app, started and serving HTTP (once it has printed ``http``) and the bus;
    killed at the end if it still runs."""
    process, output = await start(command, **env)
    try:
        await output.wait_for(LISTENING, http)
        await output.wait_for("INFO: +Application startup complete.")
        http_url = re.findall(http, output.text)[0]
        bus_url = re.findall(LISTENING, output.text)[0]
        yield App(process, output, http_url, bus_url)
    finally:
        await stop(process)


async def interrupted(process: trio.Process, output: Output, returncode: int) -> str:
    """Send SIGINT (Ctrl-C); return everything it printed, once it has exited with
    ``returncode`` and no traceback."""
    process.send_signal(signal.SIGINT)
    text = await output.rest()
    await process.wait()
    assert process.returncode == returncode, f"exit code {process.returncode}\n{text}"
    assert "Traceback" not in text, text
    return text


async def test_an_announcement_reaches_the_subscriber_and_the_app_stops_the_bus() -> None:
    with trio.fail_after(40):
        async with serving(UVICORN, UVICORN_SERVING, EVENTBUS_PORT="0") as app:
            subscriber, heard = await start(
                [sys.executable, "examples/fastapi/subscriber.py", app.bus_url])
            try:
                await heard.wait_for("subscriber: subscribed to announcements")
                async with httpx.AsyncClient(base_url=app.http_url) as http:
                    first = await http.post("/announce", json={"text": "first"})
                    second = await http.post("/announce", json={"text": "second"})
                    empty = await http.post("/announce", json={"text": ""})
                    page = await http.get("/")
                    script = await http.get(app.bus_url.replace("ws:", "http:") + "eventbus.js")
                assert (first.status_code, first.json()) == (200, {"seq": 1}), first.text
                assert (second.status_code, second.json()) == (200, {"seq": 2}), second.text
                assert empty.status_code == 422, empty.text
                assert page.status_code == 200
                assert f'<meta name="eventbus-url" content="{app.bus_url}">' in page.text
                # The page imports the browser client from the bus's own port.
                assert script.status_code == 200
                assert "export function connect" in script.text
                await heard.wait_for("subscriber: announcement #1: first",
                                     "subscriber: announcement #2: second")

                # Ctrl-C: uvicorn runs the lifespan's exit, the bus shuts down
                # gracefully, and the subscriber's connection closes with 1001.
                said = await interrupted(app.process, app.output, 0)
                assert "app: announced 'first' (seq 1)" in said, said
                assert "Waiting for application shutdown.\nbus: stopped\n" in said, said
                assert "Application shutdown complete." in said, said
                await heard.wait_for(
                    r"subscriber: disconnected \(1001 server shutting down\)")
                await interrupted(subscriber, heard, 130)
            finally:
                await stop(subscriber)


async def test_app_py_runs_uvicorn_itself_and_stops_at_ctrl_c() -> None:
    with trio.fail_after(30):
        async with serving(APP_PY, APP_PY_SERVING) as app:
            async with httpx.AsyncClient(base_url=app.http_url) as http:
                answer = await http.post("/announce", json={"text": "nobody listens"})
            # Published to an empty room: numbered all the same.
            assert (answer.status_code, answer.json()) == (200, {"seq": 1})
            # As the other examples: 130 after Ctrl-C (uvicorn's command line says 0).
            said = await interrupted(app.process, app.output, 130)
            assert "Waiting for application shutdown.\nbus: stopped\n" in said, said


def _browser_tools() -> tuple[str, str]:
    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium")
    node = shutil.which("node")
    missing = [name for name, path in (("node", node), ("chromium", chromium)) if not path]
    if not (ROOT / "tests" / "browser" / "node_modules" / "playwright-core").is_dir():
        missing.append("tests/browser/node_modules (run npm ci --prefix tests/browser)")
    if missing:
        reason = f"the FastAPI page test needs {', '.join(missing)}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    assert node is not None
    assert chromium is not None
    return node, chromium


@pytest.mark.browser
async def test_the_page_receives_what_it_announces_through_the_bus() -> None:
    node, chromium = _browser_tools()
    with trio.fail_after(60):
        async with serving(APP_PY, APP_PY_SERVING) as app:
            run = await trio.run_process(
                [node, str(HERE / "fastapi_page.mjs"), app.http_url + "/"],
                capture_stdout=True, capture_stderr=True, check=False,
                env={**os.environ, "CHROMIUM": chromium})
            said = await interrupted(app.process, app.output, 130)
    detail = (f"node exit {run.returncode}\nstdout:\n{run.stdout.decode()}\n"
              f"stderr:\n{run.stderr.decode()}\napp:\n{said}")
    assert run.returncode == 0, detail
    result = json.loads(run.stdout)
    assert "failure" not in result, detail
    assert result["received"] == ["hello from the page"], detail
    assert result["shown"] == ["hello from the page"], detail
    assert result["status"] == "subscribed to announcements", detail
    assert not [line for line in result["console"] if "error" in line], detail
    assert "app: announced 'hello from the page' (seq 1)" in said, detail
