"""The client tools of the command line: listen, publish, call.

A bus runs in the test on 127.0.0.1:0. ``main([...])`` runs its own ``trio.run``,
so it is called in a worker thread; ``listen`` runs as a real subprocess
(``python -m eventbus listen``) whose output is read line by line. Every test is
bounded by ``trio.fail_after``.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from eventbus import (
    Connection,
    EventBus,
    Forbidden,
    HandshakeRejected,
    HandshakeRequest,
    connect,
)
from eventbus.cli import main


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
