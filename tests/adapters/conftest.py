"""Fixtures for the adapter tests: a redis-server of the test run's own.

A test that needs Redis takes ``redis_server`` (one server for the whole run,
loopback only, on a free port, keeping nothing on disk; each test uses a key
prefix of its own) or ``own_redis`` (a server for that test alone, which it may
stop, restart or kill). Without ``redis-server`` on PATH these tests skip, saying
why; when ``CI=true`` they fail instead, so that CI never passes by skipping them.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

__all__ = ["DeafeningProxy", "RedisServer"]


def pytest_configure(config: pytest.Config) -> None:
    # coredis 6.9.0 leaves the memory streams of a connection that never connected
    # unclosed (a ResourceWarning when they are collected): the tests that stop
    # Redis make such connections, and the warning may show in any later test.
    config.addinivalue_line(
        "filterwarnings", r"ignore:Unclosed <MemoryObject(Send|Receive)Stream:ResourceWarning")


def _redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found is None:
        why = "redis-server is not on PATH (Debian: apt-get install redis-server)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{why}; CI=true, so the Redis tests fail instead of skipping")
        pytest.skip(why)
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """A ``redis-server`` process on 127.0.0.1, with no persistence."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary = binary
        self.directory = directory
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert self.process is None
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.directory), "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                time.sleep(0.01)
            else:
                return

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the server (SIGKILL: as if it crashed); a later start() is empty."""
        if self.process is not None:
            self.process.send_signal(sig)
            self.process.wait(10)
            self.process = None

    def restart(self, sig: int = signal.SIGKILL) -> None:
        self.stop(sig)
        self.start()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(_redis_server_binary(), tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(_redis_server_binary(), tmp_path)
    server.start()
    yield server
    server.stop()


class _Relayed:
    deaf = False


class DeafeningProxy:
    """A TCP relay to Redis that can make subscriptions silently deaf.

    :meth:`deafen` stops passing on what Redis sends to the connections that have
    subscribed so far, and keeps them open: the client sees nothing wrong, and
    Redis still counts them as subscribers. Connections made later work again.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._subscribers: set[_Relayed] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def deafen(self) -> None:
        for relayed in self._subscribers:
            relayed.deaf = True

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                    ) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._relay, listeners)

    async def _relay(self, downstream: trio.SocketStream) -> None:
        relayed = _Relayed()
        async with downstream, await trio.open_tcp_stream("127.0.0.1", self.target_port) as up:

            async def to_redis() -> None:
                while data := await downstream.receive_some():
                    if b"SUBSCRIBE" in data.upper():
                        self._subscribers.add(relayed)
                    await up.send_all(data)
                raise EOFError

            async def from_redis() -> None:
                while data := await up.receive_some():
                    if not relayed.deaf:
                        await downstream.send_all(data)
                raise EOFError

            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(to_redis)
                    nursery.start_soon(from_redis)
            except* (EOFError, trio.BrokenResourceError, trio.ClosedResourceError):
                pass
