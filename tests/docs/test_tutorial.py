"""Every snippet of the tutorial (docs/tutorial/) runs and prints what the page shows.

The Python steps run as scripts from docs/tutorial/ with this interpreter, and their
output must equal the ``.out`` file the page includes. The command-line session
(``serve.console``, ``cli.console``) runs against a real server on a free port of
127.0.0.1, with the documented port 8765 replaced by it. The last step runs as a
reader runs it: in a fresh temporary directory holding only the files the page tells
the reader to create (each "Create `name`"), with the command the page gives.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TUTORIAL = ROOT / "docs" / "tutorial"
BIN = Path(sys.executable).parent
STEPS = sorted(path.stem for path in TUTORIAL.glob("step*.py"))


def test_every_step_has_its_output_and_is_on_the_page() -> None:
    page = (TUTORIAL / "index.md").read_text()
    assert len(STEPS) >= 4
    for step in STEPS:
        assert (TUTORIAL / f"{step}.out").is_file(), step
        assert f"{{literalinclude}} {step}.py" in page, step
        assert f"{{literalinclude}} {step}.out" in page, step
    for name in ("chat.py", "pytest.ini", "test_chat.py", "serve.console", "cli.console"):
        assert f"{{literalinclude}} {name}" in page, name


@pytest.mark.parametrize("step", STEPS)
def test_step_prints_what_the_page_shows(step: str) -> None:
    proc = subprocess.run(
        [sys.executable, f"{step}.py"], cwd=TUTORIAL, capture_output=True, text=True,
        timeout=30, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (TUTORIAL / f"{step}.out").read_text(), proc.stderr


def _created_files(page: str) -> list[str]:
    """The files the page tells the reader to create, in order."""
    return re.findall(r"[Cc]reate\s+`([\w.]+)`", page)


def _run_tests(command: str, folder: Path) -> subprocess.CompletedProcess[str]:
    argv = shlex.split(command)
    assert argv[0] == "python", command
    return subprocess.run(
        [sys.executable, *argv[1:]], cwd=folder, capture_output=True, text=True,
        timeout=60, check=False,
    )


def test_the_tutorials_tests_pass_in_a_readers_folder(tmp_path: Path) -> None:
    page = (TUTORIAL / "index.md").read_text()
    created = _created_files(page)
    assert created[0] == "chat.py"
    assert {*(f"{step}.py" for step in STEPS), "pytest.ini", "test_chat.py"} <= set(created)
    for name in created:
        shutil.copy(TUTORIAL / name, tmp_path / name)
    step5 = page[page.index("## Step 5"):]
    [command] = re.findall(r"run it\s+with\s+`(python -m pytest [^`]+)`", step5)
    proc = _run_tests(command, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 passed" in proc.stdout, proc.stdout
    # The folder stands alone: without the pytest.ini the page asks for, pytest has
    # nothing that runs async tests (no configuration above it turns trio mode on).
    (tmp_path / "pytest.ini").unlink()
    proc = _run_tests(command, tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "2 failed" in proc.stdout, proc.stdout


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _commands(name: str) -> list[tuple[str, str]]:
    """(command, expected output) pairs of a ``.console`` file."""
    pairs: list[tuple[str, str]] = []
    for line in (TUTORIAL / name).read_text().splitlines():
        if line.startswith("$ "):
            pairs.append((line[2:], ""))
        else:
            command, output = pairs[-1]
            pairs[-1] = (command, output + line + "\n")
    return pairs


def test_the_command_line_session() -> None:
    port = _free_port()
    [(serve, _)] = _commands("serve.console")
    assert serve == "eventbus serve chat:bus"
    server = subprocess.Popen(
        [str(BIN / "eventbus"), *shlex.split(serve)[1:], "--port", str(port)],
        cwd=TUTORIAL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        _wait_for_port(port, server)
        for command, expected in _commands("cli.console"):
            argv = shlex.split(command.replace("8765", str(port)))
            assert argv[0] == "eventbus"
            proc = subprocess.run(
                [str(BIN / "eventbus"), *argv[1:]], cwd=TUTORIAL, capture_output=True,
                text=True, timeout=30, check=False, env={**os.environ, "NO_COLOR": "1"},
            )
            assert proc.stdout + proc.stderr == expected, command
    finally:
        server.terminate()
        server.communicate(timeout=10)


def _wait_for_port(port: int, server: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        assert server.poll() is None, server.communicate()[0]
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            time.sleep(0.05)
        else:
            return
    pytest.fail(f"eventbus serve did not listen on port {port}")
