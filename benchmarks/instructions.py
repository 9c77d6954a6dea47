"""Server instructions per operation, counted by valgrind's callgrind: a measure of
the server's work that the machine's other load cannot disturb, for changes too
small for CPU time to show on a shared machine (docs/benchmarks.md, "Metrics: the
cost of counting" and "Recovery").

    python benchmarks/instructions.py --workload ack --servers 'HEAD[metrics=false],HEAD'
    python benchmarks/instructions.py --workload fanout \\
        --servers '733196c,HEAD[history_size=0],HEAD'

Each server variant (``HEAD`` is the working tree, any other REF the ``eventbus``
package of that commit, as ``run.py``'s ``eventbus@REF``; ``[NAME=VALUE,...]`` are
settings of the app's bus, benchmarks/apps/eventbus_app.py) runs under
``valgrind --tool=callgrind`` on 127.0.0.1. The clients, in this process, run
natively: a warm-up, then callgrind's counters are zeroed (``callgrind_control``),
then the measured operations, then the counters are dumped. So the count holds only
the server's work for those operations:

* ``ack``: ``--ops`` requests with an ack (EMIT ``echo``, answered with its data), over
  ``--connections`` connections, one request in flight on each (W1's operation);
* ``fanout``: ``--ops`` PUBLISHes with an ack to a room of ``--members`` members on as
  many connections, each message delivered to every member (W2's operation); the
  count is per delivery.

Valgrind runs the server about 50 times slower than natively, so the counts do not
include what depends on timing (a socket buffer that fills, a batch of reads); that
is why the CPU-time runs of run.py stay the reference, and these counts explain them.

Exit status 0, or 2 when valgrind is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio
import trio_websocket

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import run  # noqa: E402 - benchmarks/run.py: server_tree, server_env, the variants

from eventbus.protocol import Ack, Emit, Join, JsonCodec, Publish, Role, RoomEvent  # noqa: E402

VARIANT = re.compile(r"^(?P<ref>[^\[\]]+)(?:\[(?P<settings>.*)\])?$")


def parse_variant(text: str) -> tuple[str | None, tuple[tuple[str, Any], ...]]:
    match = VARIANT.match(text.strip())
    if match is None:
        raise SystemExit(f"bad server variant {text!r}")
    ref = match["ref"]
    settings: list[tuple[str, Any]] = []
    for item in filter(None, (match["settings"] or "").split(",")):
        name, _, value = item.partition("=")
        text = value.strip()
        # JSON where it reads as JSON (numbers, true, null, lists), else a string.
        settings.append((name.strip(), json.loads(text) if text[:1] in '0123456789-[{"tfn'
                         else text))
    return (None if ref == "HEAD" else subprocess.run(
        ["git", "rev-parse", "--short", ref], cwd=run.ROOT, capture_output=True, text=True,
        check=True).stdout.strip()), tuple(settings)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def wait_health(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 300  # imports under valgrind take a while
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                if sock.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the server under valgrind did not start")
        time.sleep(0.5)


CODEC = JsonCodec(Role.CLIENT)


async def callgrind(action: str, pid: int) -> None:
    await trio.run_process(["callgrind_control", action, str(pid)], capture_stdout=True,
                           capture_stderr=True)


async def ack_load(port: int, pid: int, args: argparse.Namespace) -> None:
    """Warm up, zero the counters, then the measured requests, on the same
    connections (no handshake is counted)."""
    async with trio.open_nursery() as nursery:
        sockets = []
        for _ in range(args.connections):
            ws = await trio_websocket.connect_websocket_url(
                nursery, f"ws://127.0.0.1:{port}/", subprotocols=["eventbus.v1.json"])
            await ws.get_message()  # welcome
            sockets.append(ws)

        async def requests(ws: trio_websocket.WebSocketConnection, count: int) -> None:
            for n in range(count):
                await ws.send_message(CODEC.encode(Emit("echo", {"n": n}, 1 + n % 1000)).decode())
                assert isinstance(CODEC.decode(await ws.get_message()), Ack)

        for phase, ops in (("warmup", args.warmup), ("measured", args.ops)):
            if phase == "measured":
                await callgrind("--zero", pid)
            async with trio.open_nursery() as load:
                for index, ws in enumerate(sockets):
                    load.start_soon(requests, ws, ops // len(sockets)
                                    + (index < ops % len(sockets)))
        await callgrind("--dump=measured", pid)
        for ws in sockets:
            await ws.aclose()


async def fanout_load(port: int, pid: int, args: argparse.Namespace) -> None:
    async with trio.open_nursery() as nursery:
        members = []
        for _ in range(args.members):
            ws = await trio_websocket.connect_websocket_url(
                nursery, f"ws://127.0.0.1:{port}/", subprotocols=["eventbus.v1.json"],
                max_message_size=1 << 24)
            await ws.get_message()
            await ws.send_message(CODEC.encode(Join("fan", 1)).decode())
            assert isinstance(CODEC.decode(await ws.get_message()), Ack)
            members.append(ws)
        publisher = await trio_websocket.connect_websocket_url(
            nursery, f"ws://127.0.0.1:{port}/", subprotocols=["eventbus.v1.json"])
        await publisher.get_message()

        async def read(ws: trio_websocket.WebSocketConnection, count: int) -> None:
            got = 0
            while got < count:
                if isinstance(CODEC.decode(await ws.get_message()), RoomEvent):
                    got += 1

        for phase, ops in (("warmup", args.warmup), ("measured", args.ops)):
            if phase == "measured":
                await callgrind("--zero", pid)
            async with trio.open_nursery() as load:
                for ws in members:
                    load.start_soon(read, ws, ops)
                for n in range(ops):
                    await publisher.send_message(CODEC.encode(Publish(
                        "fan", "tick", {"n": n, "pad": "x" * 64}, 1 + n % 1000)).decode())
                    assert isinstance(CODEC.decode(await publisher.get_message()), Ack)
        await callgrind("--dump=measured", pid)
        for ws in (*members, publisher):
            await ws.aclose()


def measure(variant: str, args: argparse.Namespace) -> dict[str, Any]:
    commit, settings = parse_variant(variant)
    tree = run.server_tree(commit)
    env = run.server_env(tree, settings)
    port = free_port()
    out = Path(tempfile.mkdtemp(prefix="callgrind-")) / "callgrind.out"
    process = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--dump-instr=no",
         sys.executable, "-m", "eventbus", "serve", "benchmarks.apps.eventbus_app:bus",
         "--port", str(port), "--log-level", "warning"],
        cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_health(port, process)
        trio.run(ack_load if args.workload == "ack" else fanout_load, port, process.pid, args)
    finally:
        process.terminate()
        process.wait(120)
    measured = None
    for dump in sorted(out.parent.glob("callgrind.out*")):
        text = dump.read_text(errors="replace")
        # The dump callgrind_control asked for names its trigger in its header.
        if re.search(r"^desc: Trigger: .*measured", text, re.M):
            found = re.search(r"^(?:summary|totals):\s*(\d+)", text, re.M)
            if found:
                measured = int(found.group(1))
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        for dump in out.parent.glob("callgrind.out*"):
            name = re.sub(r"[^A-Za-z0-9_.=-]", "_", variant)
            shutil.copy(dump, args.keep / f"{name}.{dump.name}")
    shutil.rmtree(out.parent, ignore_errors=True)
    if measured is None:
        raise RuntimeError("no dump of the measured part")
    per = args.ops * (args.members if args.workload == "fanout" else 1)
    return {"variant": variant, "instructions": measured, "operations": per,
            "instructions_per_op": round(measured / per)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workload", choices=["ack", "fanout"], default="ack")
    parser.add_argument("--servers", default="HEAD[metrics=false],HEAD")
    parser.add_argument("--ops", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--members", type=int, default=50)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep the callgrind dumps here (for callgrind_annotate)")
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("valgrind (with callgrind_control) is not installed", file=sys.stderr)
        return 2
    results = [measure(variant, args) for variant in args.servers.split(";")
               if variant.strip()] if ";" in args.servers else [
        measure(variant, args) for variant in _split(args.servers)]
    base = results[0]["instructions_per_op"]
    for result in results:
        result["ratio_to_first"] = round(result["instructions_per_op"] / base, 4)
    report = {"workload": args.workload, "ops": args.ops, "members": args.members,
              "connections": args.connections, "results": results}
    text = json.dumps(report, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return 0


def _split(servers: str) -> list[str]:
    """Split on commas outside brackets: ``HEAD[a=1,b=2],HEAD``."""
    parts, depth, current = [], 0, ""
    for char in servers:
        depth += char == "["
        depth -= char == "]"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [part for part in parts if part.strip()]


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
