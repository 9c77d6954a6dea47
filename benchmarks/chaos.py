"""Chaos run: subscribers whose connections are cut at random while a publisher sends
numbered messages; at the end every subscriber must have every message exactly once,
in order (docs/benchmarks.md, "Recovery").

    python benchmarks/chaos.py                      # 50 subscribers, 5,000 messages, 1 node
    python benchmarks/chaos.py --nodes 3            # 3 nodes on a redis-server of its own,
                                                    # one of them SIGKILLed midway
    python benchmarks/chaos.py --cost               # what a replay costs the server
    python benchmarks/chaos.py --subscribers 8 --messages 400 --json   # what the tests run

Every node is an ``eventbus serve benchmarks.apps.chaos_app:bus`` process on
127.0.0.1; the clients are eventbus's Python client, in this process. A subscriber's
connection is cut from its side (its TCP stream closed without a close frame, as a
network failure looks); it reconnects to a node that is up, resumes, and the server
replays what it missed. With ``--nodes 3`` the node that a third of the clients use is
killed with SIGKILL when half the messages are out: its clients resume on the others,
and a publish whose answer died with it is sent again and applied once.

Subscribers drop a room event they have seen (the client's second guard); the run
counts those, and the server must send none (``duplicates`` is 0 in a passing run).

Exit status: 0 when every subscriber got every message once and in order, 1 if not.
Traffic goes to 127.0.0.1 only, and the run is bounded by ``--timeout``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
import trio_websocket

from eventbus import Backoff, Recovery
from eventbus.client import Client, open_client
from eventbus.client.client import subprotocols_for
from eventbus.client.transport import Opener, url_opener
from eventbus.protocol import Ack, Join, JsonCodec, Publish, Resume, Role, RoomEvent, Welcome

ROOT = Path(__file__).resolve().parent.parent
ROOM = "chaos"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def wait_port(port: int, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                if sock.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start on port {port}")
        time.sleep(0.05)


class Redis:
    """A redis-server of the run's own, on a free port, keeping nothing on disk."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("--nodes > 1 needs redis-server on PATH")
        self.port = free_port()
        self.directory = tempfile.mkdtemp(prefix="chaos-redis-")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.directory, "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.01)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        shutil.rmtree(self.directory, ignore_errors=True)


class Node:
    """One ``eventbus serve`` process."""

    def __init__(self, redis: Redis | None, prefix: str, settings: Mapping[str, Any]) -> None:
        self.port = free_port()
        argv = [sys.executable, "-m", "eventbus", "serve", "benchmarks.apps.chaos_app:bus",
                "--port", str(self.port), "--log-level", "warning"]
        if redis is not None:
            argv += ["--redis", redis.url, "--redis-prefix", prefix]
        env = {**os.environ, "CHAOS_EVENTBUS_SETTINGS": json.dumps(dict(settings))}
        self.process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        self.alive = True
        wait_port(self.port, self.process, "eventbus serve")

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.process.pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self.alive = False

    def stop(self) -> None:
        if self.alive:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def any_node_opener(nodes: list[Node], first: int) -> Opener:
    """Connects to node ``first``, and after that to a node that is up, in turn: what
    a load balancer in front of the nodes does."""
    openers = {id(node): url_opener(
        node.url, subprotocols=subprotocols_for("msgpack"), headers=[], ssl_context=None,
        connect_timeout=5.0, close_timeout=1.0, max_message_size=1 << 24) for node in nodes}
    turn = first

    def open_one() -> Any:
        nonlocal turn
        alive = [node for node in nodes if node.alive] or nodes
        node = alive[turn % len(alive)]
        turn += 1
        return openers[id(node)]()

    return open_one


class Subscriber:
    def __init__(self, number: int, nodes: list[Node]) -> None:
        self.number = number
        self.client = Client(any_node_opener(nodes, number), target=f"subscriber {number}",
                             reconnect=Backoff(initial=0.05, cap=0.5),
                             wait_reconnect=30.0)
        self.received: list[int] = []
        self.resumes: list[tuple[float, Recovery]] = []
        self.cuts = 0
        self.done = trio.Event()
        self.client.on_resume(self._resumed)

    def _resumed(self, recoveries: Mapping[str, Recovery]) -> None:
        link = self.client._current
        # From the new connection's WELCOME to the RESUME's answer: caught up.
        took = trio.current_time() - link.began if link is not None else 0.0
        for recovery in recoveries.values():
            self.resumes.append((took, recovery))

    async def run(self, total: int, ready: Callable[[], None]) -> None:
        async with open_client(self.client), self.client.subscribe(
                ROOM, buffer=total + 16) as events:
            ready()
            async for event in events:
                self.received.append(event.data)
                if event.data == total - 1 or len(self.received) >= total:
                    self.done.set()
                    return

    async def cut(self) -> None:
        link = self.client._current
        if link is not None and link.error is None:
            self.cuts += 1
            await trio.aclose_forcefully(link.ws._stream)


async def chaos(args: argparse.Namespace) -> dict[str, Any]:
    redis = Redis() if args.nodes > 1 else None
    prefix = f"chaos{random.randrange(1 << 30)}"
    nodes = [Node(redis, prefix, {}) for _ in range(args.nodes)]
    rng = random.Random(args.seed)
    killed_at: int | None = None
    try:
        subscribers = [Subscriber(n, nodes) for n in range(args.subscribers)]
        publisher = Client(any_node_opener(nodes, 0), target="publisher",
                           reconnect=Backoff(initial=0.05, cap=0.5), wait_reconnect=30.0)
        started = time.monotonic()
        with trio.move_on_after(args.timeout) as deadline:
            async with trio.open_nursery() as nursery:
                joined = 0
                all_joined = trio.Event()

                def ready() -> None:
                    nonlocal joined
                    joined += 1
                    if joined == len(subscribers):
                        all_joined.set()

                for subscriber in subscribers:
                    nursery.start_soon(subscriber.run, args.messages, ready)
                await all_joined.wait()
                sent = 0

                async def cutter() -> None:
                    while sent < args.messages:
                        await trio.sleep(rng.expovariate(args.cuts_per_second))
                        await rng.choice(subscribers).cut()

                nursery.start_soon(cutter)
                async with open_client(publisher):
                    pause = 1.0 / args.rate
                    next_at = trio.current_time()
                    for n in range(args.messages):
                        if args.nodes > 1 and killed_at is None and n == args.messages // 2:
                            nodes[0].kill()
                            killed_at = n
                        await publisher.publish(ROOM, "n", n)
                        sent = n + 1
                        next_at += pause
                        await trio.sleep_until(next_at)
                for subscriber in subscribers:
                    with trio.move_on_after(max(1.0, args.timeout / 4)):
                        await subscriber.done.wait()
                nursery.cancel_scope.cancel()
        elapsed = time.monotonic() - started
    finally:
        for node in nodes:
            node.stop()
        if redis is not None:
            redis.stop()
    expected = list(range(args.messages))
    exact = [s for s in subscribers if s.received == expected]
    resumes = [recovery for s in subscribers for _, recovery in s.resumes]
    caught_up = sorted(took for s in subscribers for took, _ in s.resumes)
    return {
        "nodes": args.nodes,
        "subscribers": args.subscribers,
        "messages": args.messages,
        "killed_node_at_message": killed_at,
        "timed_out": deadline.cancelled_caught,
        "seconds": round(elapsed, 2),
        "cuts": sum(s.cuts for s in subscribers),
        "resumes": len(resumes),
        "not_recovered": sorted({r.reason for r in resumes if not r.recovered} - {None}),
        "not_recovered_count": sum(1 for r in resumes if not r.recovered),
        "replayed": sum(r.replayed for r in resumes),
        "caught_up_p50_ms": round(1000 * caught_up[len(caught_up) // 2], 1) if caught_up else None,
        "caught_up_max_ms": round(1000 * caught_up[-1], 1) if caught_up else None,
        "exactly_once_in_order": len(exact),
        "missing": sum(len(set(expected) - set(s.received)) for s in subscribers),
        "out_of_order_or_repeated": sum(1 for s in subscribers
                                        if s.received != sorted(set(s.received))),
        "duplicates_dropped_by_clients": sum(
            s.client.statistics()["duplicates"] for s in subscribers),
        "ok": len(exact) == len(subscribers),
    }


# --- what a replay costs ------------------------------------------------------------------


@asynccontextmanager
async def raw(port: int) -> AsyncIterator[tuple[trio_websocket.WebSocketConnection, Welcome]]:
    codec = JsonCodec(Role.CLIENT)
    async with trio_websocket.open_websocket_url(
            f"ws://127.0.0.1:{port}/", subprotocols=["eventbus.v1.json"],
            max_message_size=1 << 24) as ws:
        welcome = codec.decode(await ws.get_message())
        assert isinstance(welcome, Welcome)
        yield ws, welcome


async def cost(args: argparse.Namespace) -> dict[str, Any]:
    """Server CPU per live delivery and per replayed message, on one node: N
    subscribers get M messages live; then they are away while M more are published,
    and resume together."""
    node = Node(None, "", {})
    codec = JsonCodec(Role.CLIENT)
    n, m = args.subscribers, args.messages
    try:
        async with trio.open_nursery() as nursery:
            sessions: list[tuple[str, str, list[Any]]] = []
            done = trio.Semaphore(0)

            async def member(index: int, joined: trio.Event) -> None:
                async with raw(node.port) as (ws, welcome):
                    await ws.send_message(codec.encode(Join(ROOM, 1)).decode())
                    answer = codec.decode(await ws.get_message())
                    assert isinstance(answer, Ack)
                    position = answer.data
                    joined.set()
                    got = 0
                    while got < m:
                        packet = codec.decode(await ws.get_message())
                        if isinstance(packet, RoomEvent):
                            got += 1
                            position = [packet.epoch, packet.seq]
                    sessions.append((welcome.sid, welcome.resume_token, position))
                done.release()

            for index in range(n):
                joined = trio.Event()
                nursery.start_soon(member, index, joined)
                await joined.wait()

            async def publish(count: int) -> None:
                async with raw(node.port) as (ws, _):
                    window = 64
                    sent = acked = 0
                    while acked < count:
                        while sent < count and sent - acked < window:
                            await ws.send_message(codec.encode(
                                Publish(ROOM, "n", {"n": sent, "pad": "x" * 64}, sent + 1))
                                .decode())
                            sent += 1
                        codec.decode(await ws.get_message())
                        acked += 1

            before = node.cpu_seconds()
            live_started = time.monotonic()
            await publish(m)
            for _ in range(n):
                await done.acquire()
            live_cpu = node.cpu_seconds() - before
            live_seconds = time.monotonic() - live_started
            # Everyone is away now (their connections closed): M more messages.
            await publish(m)
            caught_up: list[float] = []
            replayed = 0

            async def resume(sid: str, token: str, position: list[Any]) -> None:
                nonlocal replayed
                async with raw(node.port) as (ws, _):
                    sent_at = time.monotonic()
                    await ws.send_message(codec.encode(
                        Resume(sid, token, {ROOM: _position(position)}, 1)).decode())
                    while True:
                        packet = codec.decode(await ws.get_message())
                        if isinstance(packet, RoomEvent):
                            replayed += 1
                        elif isinstance(packet, Ack):
                            caught_up.append(time.monotonic() - sent_at)
                            return

            before = node.cpu_seconds()
            async with trio.open_nursery() as resumes:
                for sid, token, position in sessions:
                    resumes.start_soon(resume, sid, token, position)
            replay_cpu = node.cpu_seconds() - before
    finally:
        node.stop()
    live_us = 1e6 * live_cpu / (n * m)
    replay_us = 1e6 * replay_cpu / max(1, replayed)
    caught_up.sort()
    return {
        "subscribers": n, "messages": m,
        "live_cpu_us_per_delivery": round(live_us, 2),
        "live_deliveries_per_second": round(n * m / live_seconds),
        "replayed": replayed,
        "replay_cpu_us_per_message": round(replay_us, 2),
        "replay_to_live_ratio": round(replay_us / live_us, 2) if live_us else None,
        "caught_up_p50_ms": round(1000 * caught_up[len(caught_up) // 2], 1),
        "caught_up_max_ms": round(1000 * caught_up[-1], 1),
    }


def _position(wire: list[Any]) -> Any:
    from eventbus.protocol import Position

    return Position(wire[0], wire[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--subscribers", type=int, default=50)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=1000.0, help="messages per second")
    parser.add_argument("--cuts-per-second", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--cost", action="store_true", help="measure what a replay costs")
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    args = parser.parse_args()
    # Each cut logs a reconnection warning: hundreds of lines that say nothing here.
    logging.getLogger("eventbus.client").setLevel(logging.ERROR)
    resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096)) if resource.getrlimit(
        resource.RLIMIT_NOFILE)[1] >= 4096 else None
    result = trio.run(cost if args.cost else chaos, args)
    print(json.dumps(result, indent=None if args.json else 2))
    return 0 if args.cost or result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
