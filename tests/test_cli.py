"""The command line: the client tools listen, publish and call, and serve.

A bus runs in the test on 127.0.0.1:0. ``main([...])`` runs its own ``trio.run``,
so it is called in a worker thread; ``listen`` runs as a real subprocess
(``python -m eventbus listen``) whose output is read line by line. What is about
the process (signals, a port in use, an app that fails to import, exit statuses and
stderr) runs ``python -m eventbus serve`` as a real subprocess too. Every test that
does I/O is bounded by ``trio.fail_after``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

import eventbus
from eventbus import (
    Connection,
    ConnectionClosed,
    EventBus,
    Forbidden,
    HandshakeRejected,
    HandshakeRequest,
    connect,
)
from eventbus.cli import build_parser, main


def make_bus() -> EventBus:
    bus = EventBus(open_rooms=True)

    @bus.on("echo")
    async def echo(sock: Connection, data: Any) -> Any:
        return data

    @bus.on("fail")
    async def fail(sock: Connection, data: Any) -> None:
        raise Forbidden("members only")

    @bus.on("never", concurrency=4)
    async def never(sock: Connection, data: Any) -> None:
        await trio.sleep_forever()

    @bus.authorize_publish
    def may_publish(sock: Connection, room: str, event: str) -> bool:
        return room != "closed"

    @bus.authenticate
    async def authenticate(request: HandshakeRequest) -> None:
        if request.path == "/private" and request.header("authorization") != "Bearer ok":
            raise HandshakeRejected(401, "bad token")

    return bus


@asynccontextmanager
async def serving(bus: EventBus) -> AsyncIterator[str]:
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(bus.serve, "127.0.0.1", 0)
        yield f"ws://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        nursery.cancel_scope.cancel()


async def run_main(*argv: str) -> int:
    return await trio.to_thread.run_sync(main, list(argv))


class Lines:
    """Reads lines from a subprocess pipe."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
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


async def test_listen_publish_and_call_end_to_end(capsys: pytest.CaptureFixture[str]) -> None:
    with trio.fail_after(20):
        async with serving(make_bus()) as url:
            process = await trio.lowlevel.open_process(
                [sys.executable, "-m", "eventbus", "listen", f"{url}/", "news", "sport",
                 "--codec", "msgpack"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )
            try:
                assert process.stdout is not None
                assert process.stderr is not None
                status = Lines(process.stderr)
                assert await status.next() == "eventbus listen: joined news, sport"
                out = Lines(process.stdout)

                data = '{"title": "é", "n": 1}'
                assert await run_main("publish", url, "news", "headline", data) == 0
                assert json.loads(await out.next()) == {
                    "room": "news", "event": "headline", "data": {"title": "é", "n": 1},
                }
                assert await run_main("publish", f"{url}/", "sport", "score", "[1, 2]",
                                      "--codec", "msgpack") == 0
                assert json.loads(await out.next()) == {
                    "room": "sport", "event": "score", "data": [1, 2],
                }
                # Binary data (from a msgpack client) is printed as {"$binary": hex}.
                async with connect(url + "/", codec="msgpack") as client:
                    await client.publish("news", "photo", {"jpeg": b"\xff\xd8"})
                assert json.loads(await out.next()) == {
                    "room": "news", "event": "photo", "data": {"jpeg": {"$binary": "ffd8"}},
                }
            finally:
                process.kill()
                await process.wait()

            capsys.readouterr()
            assert await run_main("call", url, "echo", '{"a": [1, null]}') == 0
            assert json.loads(capsys.readouterr().out) == {"a": [1, None]}


async def test_runtime_failures_exit_1_with_a_message(capsys: pytest.CaptureFixture[str]) -> None:
    with trio.fail_after(20):
        async with serving(make_bus()) as url:
            assert await run_main("publish", url, "closed", "x", "1") == 1
            err = capsys.readouterr().err
            assert err.startswith("error: [forbidden] ")
            assert await run_main("call", url, "fail", "null") == 1
            assert capsys.readouterr().err == "error: [forbidden] members only\n"
            assert await run_main("call", url, "never", "null", "--timeout", "0.1") == 1
            assert "no answer to call 'never' within 0.1 s" in capsys.readouterr().err
            assert await run_main("call", f"{url}/private", "echo", "1") == 1
            assert capsys.readouterr().err == "error: handshake rejected: HTTP 401: bad token\n"
            assert await run_main("call", f"{url}/private", "echo", "1",
                                  "-H", "Authorization: Bearer ok") == 0
            assert capsys.readouterr().out == "1\n"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert await run_main("publish", f"ws://127.0.0.1:{port}/", "r", "e", "1") == 1
    assert capsys.readouterr().err.startswith(f"error: cannot connect to ws://127.0.0.1:{port}/")


@pytest.mark.parametrize(
    ("argv", "printed"),
    [
        (["listen", "{url}/", "news"], "eventbus listen: joined news"),
        # Interrupted while a request waits for its answer.
        (["call", "{url}", "never", "null", "--timeout", "60"], None),
    ],
    ids=["listen", "call"],
)
async def test_ctrl_c_stops_a_client_tool_with_130(argv: list[str], printed: str | None) -> None:
    bus = make_bus()
    calls = trio.Event()

    @bus.on("never", concurrency=4)
    async def never(sock: Connection, data: Any) -> None:
        calls.set()
        await trio.sleep_forever()

    with trio.fail_after(20):
        async with serving(bus) as url:
            process = await trio.lowlevel.open_process(
                [sys.executable, "-m", "eventbus", *(arg.format(url=url) for arg in argv)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )
            try:
                assert process.stderr is not None
                err = Lines(process.stderr)
                if printed is not None:
                    assert await err.next() == printed
                else:
                    await calls.wait()
                process.send_signal(signal.SIGINT)
                assert await process.wait() == 130
                assert await rest_of(err) == ""
            finally:
                process.kill()
                await process.wait()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["publish", "ws://h/", "r", "e", "{bad"], "argument JSON_DATA: not valid JSON"),
        (["call", "ws://127.0.0.1:1/", "e", "NaN"], "not valid JSON"),
        (["call", "http://127.0.0.1:1/", "e", "1"], "ws:// or wss://"),
        (["listen", "ws://127.0.0.1:1/"], "the following arguments are required: ROOM"),
        (["call", "ws://h/", "e", "1", "-H", "no colon"], "'Name: value'"),
        (["publish", "ws://h/", "r", "e", "1", "--codec", "xml"], "invalid choice"),
    ],
)
def test_usage_errors_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_help_documents_binary_output_and_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["listen", "--help"])
    out = capsys.readouterr().out
    assert '{"$binary": "<hex>"}' in out
    assert "2 usage" in out


# --- serve, --version and --help --------------------------------------------------------

LISTENING = re.compile(r"listening on (ws://127\.0\.0\.1:\d+/)")


async def serve_process(
    *argv: str, cwd: Path | None = None,
) -> tuple[trio.Process, str, Lines]:
    """Start ``python -m eventbus serve ARGV`` and wait until it listens; returns the
    process, its URL and its stderr, read up to the "listening on" line."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "eventbus", "serve", "--port", "0", *argv],
        stderr=subprocess.PIPE, cwd=cwd,
    )
    assert process.stderr is not None
    err = Lines(process.stderr)
    while not (found := LISTENING.search(await err.next())):
        pass
    return process, found[1], err


async def rest_of(lines: Lines) -> str:
    """What is left in a pipe once its process has exited."""
    text = lines.buffer
    while data := await lines.stream.receive_some():
        text += data
    return text.decode()


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 0)])
async def test_serve_stops_gracefully_on_ctrl_c_and_sigterm(
    signum: signal.Signals, status: int,
) -> None:
    with trio.fail_after(20):
        process, url, err = await serve_process()
        try:
            async with connect(url, reconnect=False) as client, \
                    client.subscribe("news") as events:
                process.send_signal(signum)
                with pytest.raises(ConnectionClosed) as closed:
                    await events.__anext__()
                # The graceful shutdown: connections are closed with 1001.
                assert closed.value.close_code == 1001
            assert await process.wait() == status
            stderr = await rest_of(err)
            assert f"{signum.name}: shutting down gracefully" in stderr
            assert "Traceback" not in stderr
        finally:
            process.kill()
            await process.wait()


async def test_serve_on_a_port_in_use_says_so_in_one_line_and_exits_1() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with trio.fail_after(20):
            done = await trio.run_process(
                [sys.executable, "-m", "eventbus", "serve", "--port", str(port),
                 "--log-level", "warning"],
                capture_stdout=True, capture_stderr=True, check=False,
            )
    assert done.returncode == 1
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"eventbus serve: cannot listen on 127.0.0.1:{port}: "), lines
    assert "in use" in lines[0], lines


APP_ERRORS = {
    "syntax": ({"app_syntax.py": "import eventbus\nbus = eventbus.EventBus(\n"},
               "app_syntax:bus", "app_syntax.py:2: SyntaxError: "),
    "name": ({"app_name.py": "import eventbus\n\nbus = eventbus.EventBus()\nbuss.on\n"},
             "app_name:bus", "app_name.py:4: NameError: name 'buss' is not defined"),
    # The line named is in the app's own code, where its author can act: the helper
    # that raised, not the standard library's json that an app called.
    "helper": ({"app_helper.py": "import helper\n",
                "helper.py": "def load():\n    raise RuntimeError('no config')\n\nload()\n"},
               "app_helper:bus", "helper.py:2: RuntimeError: no config"),
    "library": ({"app_json.py": "import json\n\nSETTINGS = json.loads('{')\n"},
                "app_json:bus", "app_json.py:3: JSONDecodeError: "),
    "dependency": ({"app_dep.py": "import eventbus\nimport no_such_dependency\n"},
                   "app_dep:bus",
                   "app_dep.py:2: ModuleNotFoundError: No module named 'no_such_dependency'"),
    "missing": ({}, "no_such_app:bus", "no module named 'no_such_app'"),
}


@pytest.mark.parametrize("case", APP_ERRORS)
async def test_an_app_that_cannot_be_imported_is_one_line_naming_the_place(
    tmp_path: Path, case: str,
) -> None:
    files, spec, expected = APP_ERRORS[case]
    for name, source in files.items():
        (tmp_path / name).write_text(source)
    with trio.fail_after(20):
        done = await trio.run_process(
            [sys.executable, "-m", "eventbus", "serve", spec], cwd=tmp_path,
            capture_stdout=True, capture_stderr=True, check=False,
        )
    assert done.returncode == 2
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("eventbus serve: "), lines
    assert expected in lines[0], lines


@pytest.fixture
def app_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The current directory, for ``serve`` to import app modules from; they are
    forgotten afterwards, so that the next test can write others of the same name."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    importlib.invalidate_caches()  # the import system's listing of "." is another dir's
    yield tmp_path
    for name, module in sys.modules.copy().items():  # copy(): atomic, unlike list()
        if Path(getattr(module, "__file__", None) or "/").parent == tmp_path:
            del sys.modules[name]


@pytest.mark.parametrize(
    ("source", "spec", "expected"),
    [
        ("import eventbus\n\ndef make():\n    return eventbus.EventBus(nonsense=1)\n",
         "make", "cli_factory:make() failed: cli_factory.py:4: TypeError: "),
        ("bus = 42\n", "bus", "cli_factory:bus is a int, not an EventBus"),
        ("bus = 42\n", "other", "module 'cli_factory' has no attribute 'other'"),
    ],
)
def test_an_app_that_cannot_be_loaded_exits_2(
    app_dir: Path, capsys: pytest.CaptureFixture[str], source: str, spec: str, expected: str,
) -> None:
    (app_dir / "cli_factory.py").write_text(source)
    assert main(["serve", f"cli_factory:{spec}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"eventbus serve: {expected}"), err
    assert err.count("\n") == 1, err


def test_errors_after_listening_are_not_reported_as_listening_errors(app_dir: Path) -> None:
    # An OSError once the bus serves is not "cannot listen": it leaves main as itself.
    (app_dir / "cli_broken.py").write_text(
        "import eventbus, trio.testing\n\n"
        "class Broken(eventbus.EventBus):\n"
        "    async def serve_listeners(self, listeners, *, task_status, **_):\n"
        "        task_status.started(listeners)\n"
        "        await trio.testing.wait_all_tasks_blocked()  # serve waits for signals\n"
        "        for listener in listeners:\n"
        "            await listener.aclose()\n"
        "        raise OSError('disk on fire')\n\n"
        "bus = Broken()\n"
    )
    with pytest.raises(OSError, match="disk on fire"):
        main(["serve", "cli_broken:bus", "--port", "0", "--log-level", "warning"])


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"eventbus {eventbus.__version__}\n"
    assert eventbus.__version__ == importlib.metadata.version("eventbus")


@pytest.mark.parametrize(
    ("command", "defaults"),
    [
        ("serve", ["--host HOST", "(default: 127.0.0.1)", "(default: 8765)", "(default: info)"]),
        ("listen", ["(default: json)"]),
        ("publish", ["(default: json)", "(default: 10)"]),
        ("call", ["(default: json)", "(default: 10)"]),
    ],
)
def test_help_shows_the_defaults(
    capsys: pytest.CaptureFixture[str], command: str, defaults: list[str],
) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for default in defaults:
        assert default in out, default
    # Every option but --help says its default.
    parser = next(action for action in build_parser()._actions
                  if isinstance(action, argparse._SubParsersAction)).choices[command]
    for action in parser._actions:
        if action.option_strings and action.dest != "help" and action.help != argparse.SUPPRESS:
            assert "(default: " in (action.help or ""), action.option_strings
