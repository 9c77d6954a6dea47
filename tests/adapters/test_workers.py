"""`eventbus serve --workers N --redis URL`: N processes on one port, one bus."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import trio

from eventbus.cli import main
from eventbus.protocol import Publish, RoomEvent
from tests.server.conftest import Raw, raw_client

from .conftest import RedisServer, _free_port
from .test_cluster import ROOT, join, wait_serving


def test_workers_above_one_need_redis_and_a_fixed_port(capsys: object) -> None:
    assert main(["serve", "--workers", "2"]) == 2
    assert main(["serve", "--workers", "2", "--redis", "redis://127.0.0.1:1/0",
                 "--port", "0"]) == 2
    assert main(["serve", "--workers", "0", "--redis", "redis://127.0.0.1:1/0"]) == 2


async def test_two_workers_on_one_port_are_one_bus(redis_server: RedisServer) -> None:
    port = _free_port()
    supervisor = subprocess.Popen(  # noqa: ASYNC220 - a quick fork; waits are async
        [sys.executable, "-m", "eventbus", "serve", "--workers", "2", "--port", str(port),
         "--redis", redis_server.url, "--redis-prefix", f"w{port}", "--log-level", "warning"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        await wait_serving(port, supervisor)
        with trio.fail_after(30):
            async with contextlib.AsyncExitStack() as stack:
                # Connections spread over the workers (once both listen: one may
                # start later): open some until two nodes show.
                by_node: dict[str, Raw] = {}
                for _ in range(200):
                    async with contextlib.AsyncExitStack() as attempt:
                        client = await attempt.enter_async_context(raw_client(port))
                        if client.sid[:8] not in by_node:
                            by_node[client.sid[:8]] = client
                            stack.push_async_exit(attempt.pop_all())
                    if len(by_node) == 2:
                        break
                    await trio.sleep(0.05)
                assert len(by_node) == 2, "SO_REUSEPORT put 200 connections on one worker"
                first, second = by_node.values()
                await join(first, "r")
                await join(second, "r")
                await first.send(Publish("r", "hi", "across", 1))
                while True:
                    event = await second.recv(timeout=10)
                    if isinstance(event, RoomEvent):
                        assert event.data == "across"
                        break
        supervisor.send_signal(signal.SIGINT)
        assert supervisor.wait(30) == 130
        assert supervisor.stderr is not None
        assert b"Traceback" not in supervisor.stderr.read()
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait(10)
        if supervisor.stderr is not None:
            supervisor.stderr.close()


def _children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.add(int(entry.name))
    return found


def test_workers_that_cannot_start_stop_the_supervisor(redis_server: RedisServer) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        supervisor = subprocess.run(
            [sys.executable, "-m", "eventbus", "serve", "--workers", "2",
             "--port", str(taken.getsockname()[1]), "--redis", redis_server.url],
            cwd=ROOT, capture_output=True, timeout=60, check=False)
    finally:
        taken.close()
    assert supervisor.returncode == 1
    assert b"could not start" in supervisor.stderr
    assert b"Traceback" not in supervisor.stderr


async def test_a_worker_that_dies_is_started_again(redis_server: RedisServer) -> None:
    port = _free_port()
    supervisor = subprocess.Popen(  # noqa: ASYNC220 - a quick fork; waits are async
        [sys.executable, "-m", "eventbus", "serve", "--workers", "2", "--port", str(port),
         "--redis", redis_server.url, "--redis-prefix", f"d{port}"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        await wait_serving(port, supervisor)
        with trio.fail_after(30):
            while len(first := _children(supervisor.pid)) < 2:  # noqa: ASYNC110 - /proc
                await trio.sleep(0.05)
            await trio.sleep(2.5)  # past the start-up window: a death now is a crash
            victim = min(first)
            os.kill(victim, signal.SIGKILL)
            while True:
                now = _children(supervisor.pid)
                if len(now) == 2 and victim not in now:
                    break
                await trio.sleep(0.1)
            await wait_serving(port, supervisor)
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(30) == 0
        assert supervisor.stderr is not None
        assert b"starting it again" in supervisor.stderr.read()
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait(10)
        if supervisor.stderr is not None:
            supervisor.stderr.close()
