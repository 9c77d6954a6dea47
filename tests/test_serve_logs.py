"""``python -m eventbus serve`` as a real process: the settings it was given reach
the bus its app made, ``--log-format json`` writes one JSON object per line, and
the resume token never reaches the log, at any level, in either format.

Servers listen on 127.0.0.1 port 0 (the log says which port they got), in a
temporary directory, with an environment emptied of ``EVENTBUS_*`` variables; every
test is bounded by ``trio.fail_after``, and a server that outlives its test is
killed.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio_websocket

from eventbus import connect
from eventbus.logformat import JsonFormatter
from eventbus.protocol import Ack, Emit, ErrorReply, Event, Join, Position, Publish, Resume
from tests.server.conftest import Raw, raw_client

LISTENING = re.compile(rb"listening on ws://127\.0\.0\.1:(\d+)/")


class Server:
    """A serving process and everything it wrote to stderr so far."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.stderr = b""
        self.port = 0
        self.listening = trio.Event()

    async def collect(self, stream: trio.abc.ReceiveStream) -> None:
        while data := await stream.receive_some():
            self.stderr += data
            found = LISTENING.search(self.stderr)
            if found and not self.listening.is_set():
                self.port = int(found[1])
                self.listening.set()

    async def stop(self) -> str:
        """SIGTERM, the exit status (0), and the whole log."""
        self.process.send_signal(signal.SIGTERM)
        assert await self.process.wait() == 0, self.stderr.decode()
        return self.stderr.decode()


@asynccontextmanager
async def server(cwd: Path, *argv: str, env: dict[str, str] | None = None,
                 ) -> AsyncIterator[Server]:
    environ = {k: v for k, v in os.environ.items() if not k.upper().startswith("EVENTBUS_")}
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "eventbus", "serve", "--port", "0", *argv],
        stderr=subprocess.PIPE, cwd=cwd, env={**environ, **(env or {})},
    )
    served = Server(process)
    try:
        async with trio.open_nursery() as nursery:
            assert process.stderr is not None
            nursery.start_soon(served.collect, process.stderr)
            with trio.fail_after(10):
                await served.listening.wait()
            yield served
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_the_settings_reach_the_apps_bus(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(
        "import eventbus\n\nbus = eventbus.EventBus(open_rooms=True, ping_interval=5.0, "
        "max_rooms=7, max_pending=8)\n")
    (tmp_path / "cfg.toml").write_text(
        '[serve]\napp = "app:bus"\n[bus]\nmax_rooms = 3\nping_interval = 4\n')
    with trio.fail_after(20):
        async with server(tmp_path, "--max-pending", "9", env={
                "EVENTBUS_CONFIG": "cfg.toml", "EVENTBUS_PING_INTERVAL": "2"}) as served:
            async with connect(f"ws://127.0.0.1:{served.port}/", reconnect=False) as client:
                options = client.options
                assert options is not None
                assert options.ping_interval == 2000  # env over file over app
                assert options.max_rooms == 3  # file over app
                assert options.max_pending == 9  # flag over app
                await client.join("room")  # open_rooms: the app's own, kept
            await served.stop()


# --- JSON lines ----------------------------------------------------------------------------


def _record(**fields: Any) -> logging.LogRecord:
    record = logging.makeLogRecord({"name": "eventbus.test", "levelno": logging.WARNING,
                                    "levelname": "WARNING", "msg": "a %s line",
                                    "args": ("caf\u00e9\nforged",), **fields})
    record.created = 0.5
    return record


def test_a_json_line_has_time_level_logger_message_and_the_extra_fields() -> None:
    line = JsonFormatter().format(_record(sid="abc", code=4001, peer=("127.0.0.1", 5),
                                          level="not this one"))
    # Nothing in a message can end the line.
    assert "\n" not in line
    assert line.isascii()
    assert json.loads(line) == {
        "time": "1970-01-01T00:00:00.500+00:00", "level": "WARNING",
        "logger": "eventbus.test", "message": "a caf\u00e9\nforged line",
        "sid": "abc", "code": 4001, "peer": ["127.0.0.1", 5],
    }
    odd = json.loads(JsonFormatter().format(_record(thing=object())))
    assert odd["thing"].startswith("<object object at ")  # not JSON: its str()


def test_a_json_line_carries_the_traceback() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = _record(exc_info=sys.exc_info(), stack_info="Stack (most recent call last)")
    entry = json.loads(JsonFormatter().format(record))
    assert entry["exception"].startswith("Traceback (most recent call last)")
    assert entry["exception"].endswith("RuntimeError: boom")
    assert entry["stack"] == "Stack (most recent call last)"


# --- the resume token, over real connections ------------------------------------------


async def _use_the_token(port: int) -> tuple[list[str], list[str]]:
    """Connect, resume, err and close in the ways that get logged, handing the
    server each connection's resume token; returns the tokens, and the sids."""
    tokens, sids = [], []
    async with raw_client(port) as first:
        assert first.welcome is not None
        token, sid = first.welcome.resume_token, first.sid
        tokens.append(token)
        sids.append(sid)
        await first.send(Join("r", 1))
        assert isinstance(await first.recv(), Ack)
        await first.send(Publish("r", "e", {"x": 1}, 2))
        assert isinstance(await first.recv(), Ack)
        await first.send(Emit("echo", "hi", 3))
        assert isinstance(await first.recv(), Ack)
        # RESUME, well formed and not: the server answers with errors.
        await first.send(Resume(sid, token, {}, 4))
        assert isinstance(await first.recv(), ErrorReply)
        await first.send_raw(json.dumps([10, sid, token, "not a map", 5]))
        assert isinstance(await first.recv(), ErrorReply)
    async with raw_client(port) as second:
        assert second.welcome is not None
        tokens.append(second.welcome.resume_token)
        sids.append(second.sid)
        await second.send(Resume(sid, token, {"r": Position("e", 0)}, 1))  # first's session
        fresh = await second.recv()  # a token for the resumed session, then the answer
        assert isinstance(fresh, Event)
        assert fresh.event == "$resume_token"
        tokens.append(fresh.data)
        assert isinstance(await second.recv(), Ack)
        # Protocol errors in a row until the server closes it with 4000 (logged).
        with pytest.raises(trio_websocket.ConnectionClosed) as closed:
            await _err_until_closed(second, [10, sid, token])
        assert closed.value.reason is not None
        assert closed.value.reason.code == 4000
    async with raw_client(port) as third:
        assert third.welcome is not None
        tokens.append(third.welcome.resume_token)
        sids.append(third.sid)
        await trio.aclose_forcefully(third.ws._stream)  # lost, no close frame
    return tokens, sids


async def _err_until_closed(client: Raw, packet: list[Any]) -> None:
    for _ in range(100):
        await client.send_raw(json.dumps(packet))
        await client.recv()
    raise AssertionError("the server did not close after 100 protocol errors")


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_the_resume_token_never_appears_in_the_log(
    tmp_path: Path, log_format: str,
) -> None:
    with trio.fail_after(30):
        async with server(tmp_path, "--log-level", "debug",
                          env={"EVENTBUS_LOG_FORMAT": log_format}) as served:
            tokens, sids = await _use_the_token(served.port)
            async with raw_client(served.port) as last:  # closed by the shutdown (1001)
                assert last.welcome is not None
                tokens.append(last.welcome.resume_token)
                log = await served.stop()
    lines = log.splitlines()
    # Lines were written about these connections (opened, closed: at INFO): the log
    # was not empty, at debug level too.
    assert sum("connection" in line for line in lines) >= 8, log
    for sid in sids:  # each connection was logged, by its sid ...
        assert sid in log
    for token in tokens:  # ... and never by its token
        assert token not in log
    if log_format == "json":
        entries = [json.loads(line) for line in lines]  # every line is JSON
        assert {"time", "level", "logger", "message"} <= set(entries[0])
        assert any(entry["message"].startswith("listening on ws://") for entry in entries)
        assert "INFO" in {entry["level"] for entry in entries}
    else:
        assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ \S+: ", line)
                   for line in lines), log
