"""``python -m eventbus serve`` as a real process: the built-in demo answers, its log
says what it serves, SIGTERM shuts it down gracefully, and a bad app spec is an
error with exit status 2."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from eventbus.protocol import Ack, Emit, Join, Publish, RoomEvent

from .conftest import raw_client
from .test_handshake import close_code, echo, http_get

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


class Served:
    def __init__(self, process: trio.Process, port: int) -> None:
        self.process = process
        self.port = port
        self.stderr = b""
        self.exited = trio.Event()

    async def collect(self, stream: trio.abc.ReceiveStream) -> None:
        while chunk := await stream.receive_some(65536):
            self.stderr += chunk

    async def wait_healthy(self) -> None:
        """Poll /health until it answers (bounded by the caller's fail_after)."""
        while True:
            if self.process.returncode is not None:
                raise AssertionError(f"the server exited: {self.stderr.decode()}")
            try:
                status, _, _ = await http_get(self.port, "/health")
            except OSError:
                await trio.sleep(0.05)
                continue
            assert status == 200
            return


@asynccontextmanager
async def serve_process(*args: str) -> AsyncIterator[Served]:
    port = free_port()
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "eventbus", "serve", "--port", str(port), *args],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        cwd=ROOT, env=env(),
    )
    served = Served(process, port)
    try:
        async with trio.open_nursery() as nursery:
            assert process.stderr is not None
            nursery.start_soon(served.collect, process.stderr)
            yield served
    finally:
        if process.returncode is None:
            process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()
            if process.stderr is not None:
                await process.stderr.aclose()


async def test_serve_demo_then_sigterm_shuts_down_gracefully() -> None:
    with trio.fail_after(20):
        async with serve_process() as served:
            with trio.fail_after(10):
                await served.wait_healthy()
            port = served.port
            async with raw_client(port) as a, raw_client(port, "msgpack") as b:
                await echo(a, 1, {"hello": "demo"})
                # Open rooms: anyone may join and publish.
                for client in (a, b):
                    await client.send(Join("lobby", 2))
                    assert isinstance(await client.recv(), Ack)
                await a.send(Publish("lobby", "chat", "hi", 3))
                ack = await a.recv()
                assert isinstance(ack, Ack)
                assert ack.ack_id == 3
                assert await b.recv() == RoomEvent("lobby", "chat", "hi", *ack.data)
                await b.send(Emit("nosuch", None, 4))
                answer = await b.recv()
                assert (answer.ack_id, answer.code) == (4, "unknown_event")
                served.process.send_signal(signal.SIGTERM)
                assert await close_code(a) == 1001
                assert await close_code(b) == 1001
            with trio.fail_after(5):
                assert await served.process.wait() == 0
        log = served.stderr.decode()
        assert "open rooms" in log
        assert f"ws://127.0.0.1:{port}/" in log
        assert "SIGTERM" in log


async def test_sigterm_while_idle_exits_0() -> None:
    with trio.fail_after(20):
        async with serve_process("--log-level", "warning") as served:
            with trio.fail_after(10):
                await served.wait_healthy()
            served.process.send_signal(signal.SIGTERM)
            with trio.fail_after(5):
                assert await served.process.wait() == 0
        assert "open rooms" not in served.stderr.decode()  # info is below warning


@pytest.mark.parametrize(
    ("app", "says"),
    [
        ("nosuchmodule:app", "nosuchmodule"),
        ("eventbus.demo:nothing", "nothing"),
        ("eventbus.demo", "module:attribute"),
        ("eventbus.demo:__name__", "not an EventBus"),
    ],
)
async def test_bad_app_spec_exits_2_with_a_message(app: str, says: str) -> None:
    with trio.fail_after(10):
        result = await trio.run_process(
            [sys.executable, "-m", "eventbus", "serve", app, "--port", str(free_port())],
            capture_stdout=True, capture_stderr=True, check=False, cwd=ROOT, env=env(),
        )
    assert result.returncode == 2
    error = result.stderr.decode()
    assert error.startswith("eventbus serve: ")
    assert says in error
    assert "Traceback" not in error
