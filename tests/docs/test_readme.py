"""The README's code runs as the README says to run it.

Its two Python snippets are saved under the names their first lines give (app.py and
client.py) in a fresh temporary directory, and the three commands that follow them
run there as real processes: ``eventbus serve app:bus``, ``python client.py`` and
``eventbus publish ...``. The only changes: ``.venv/bin/`` is this interpreter's
directory, the server gets a free port of 127.0.0.1 (``--port``) in place of 8765,
and the client's output is unbuffered, as on a terminal. The client must print what
the README says it prints. The Quick start must show exactly the two commands that
set everything up.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

README = Path(__file__).resolve().parents[2] / "README.md"
BIN = Path(sys.executable).parent
PORT = "8765"


def blocks(language: str, text: str | None = None) -> list[str]:
    text = README.read_text() if text is None else text
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


def section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else len(text)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def command(line: str, port: int) -> list[str]:
    """A README command line as argv: .venv/bin/X is this venv's X, 8765 is ``port``."""
    argv = shlex.split(line.replace(PORT, str(port)))
    assert argv[0].startswith(".venv/bin/"), line
    return [str(BIN / argv[0].removeprefix(".venv/bin/")), *argv[1:]]


class Lines:
    """Reads the lines of a subprocess pipe."""

    def __init__(self, stream: trio.abc.ReceiveStream | None) -> None:
        assert stream is not None
        self.stream = stream
        self.buffer = b""

    async def next(self) -> str:
        while b"\n" not in self.buffer:
            data = await self.stream.receive_some()
            if not data:
                raise EOFError(self.buffer.decode())
            self.buffer += data
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode()


@asynccontextmanager
async def process(argv: list[str], cwd: Path) -> AsyncIterator[trio.Process]:
    proc = await trio.lowlevel.open_process(
        argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()  # only when the test failed: it stops them itself
        with trio.CancelScope(shield=True):
            await proc.wait()


async def test_the_snippets_run_as_the_readme_says(tmp_path: Path) -> None:
    snippets = blocks("python")[:2]
    names = [snippet.splitlines()[0].removeprefix("# ") for snippet in snippets]
    assert names == ["app.py", "client.py"]
    for name, snippet in zip(names, snippets, strict=True):
        (tmp_path / name).write_text(snippet)
    [commands] = [block for block in blocks("sh") if "serve app:bus" in block]
    serve, client, publish = commands.splitlines()
    assert serve == ".venv/bin/eventbus serve app:bus"
    assert client == ".venv/bin/python client.py"
    port = free_port()
    (tmp_path / "client.py").write_text(
        snippets[1].replace(f"127.0.0.1:{PORT}", f"127.0.0.1:{port}"))

    with trio.fail_after(30):
        async with process([*command(serve, port), "--port", str(port)], tmp_path) as server:
            log = Lines(server.stderr)
            while "listening on" not in await log.next():
                pass
            async with process(command(client, port), tmp_path) as listener:
                out = Lines(listener.stdout)
                assert await out.next() == "{'hello': 'world'}"
                # The client subscribes after it printed the answer: publish until the
                # event arrives (a publish before the JOIN reaches nobody).
                while True:
                    result = await trio.run_process(
                        command(publish, port), cwd=tmp_path, capture_stdout=True,
                        capture_stderr=True, check=False)
                    assert result.returncode == 0, result.stderr.decode()
                    with trio.move_on_after(1):
                        assert await out.next() == "news headline it works"
                        break
                # "Ctrl-C stops the client and the server" (their exit statuses are
                # the CLI's business, tested in tests/test_cli*.py).
                listener.send_signal(signal.SIGINT)
                await listener.wait()
            server.send_signal(signal.SIGINT)
            await server.wait()


def test_the_quick_start_shows_the_two_commands_that_set_everything_up() -> None:
    commands = [block.strip() for block in blocks("sh", section("Quick start"))]
    assert commands == ["python3 dev.py serve", "python3 dev.py test"]
