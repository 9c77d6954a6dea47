"""Client-side round trips: what a client costs per call, side by side.

    python benchmarks/client_rtt.py                         # trio at 35da31a~1 and HEAD, asyncio
    python benchmarks/client_rtt.py --before 733196c --calls 20000 --reps 5

One ``eventbus serve benchmarks.apps.eventbus_app:bus`` process on 127.0.0.1 answers
``echo`` calls. Each client variant runs in a process of its own, against it, in
turn (rotated between repetitions): a warm-up, then ``--calls`` sequential calls on
one connection (``await client.call("echo", n)``), timed by the wall clock and by
the client process's CPU time. Variants:

* ``trio@REF``: the trio client of commit REF (its ``eventbus`` package extracted
  with ``git archive``, first on PYTHONPATH, as run.py does for servers);
* ``trio``: the trio client of the working tree;
* ``asyncio``: the asyncio client of the working tree (``eventbus.asyncio``).

It reports calls per second and client CPU per call (the figure to read: the
server's share is the same for all), with the ratio of each to the first variant,
as medians over the repetitions. Exit status 0.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import run  # noqa: E402 - run.py's server_tree and wait for a port

CLIENT = r"""
import json, sys, time
calls, warmup, url, flavour = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
async def measure(connect):
    async with connect(url) as client:
        for n in range(warmup):
            await client.call("echo", n)
        wall, cpu = time.perf_counter(), time.process_time()
        for n in range(calls):
            await client.call("echo", n)
        return time.perf_counter() - wall, time.process_time() - cpu
if flavour == "asyncio":
    import asyncio
    import eventbus.asyncio
    wall, cpu = asyncio.run(measure(eventbus.asyncio.connect))
else:
    import trio
    import eventbus
    wall, cpu = trio.run(measure, eventbus.connect)
print(json.dumps({"wall": wall, "cpu": cpu, "file": __import__("eventbus").__file__}))
"""


def client_run(variant: str, url: str, args: argparse.Namespace) -> dict[str, float]:
    flavour, _, ref = variant.partition("@")
    tree = run.server_tree(ref) if ref else ROOT
    env = dict(os.environ)
    if ref:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tree), env.get("PYTHONPATH")]))
    out = subprocess.run(
        [sys.executable, "-c", CLIENT, str(args.calls), str(args.warmup), url, flavour],
        cwd=tree, env=env, capture_output=True, text=True, check=True, timeout=600)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    expected = str(tree / "eventbus")
    if not str(result.pop("file")).startswith(expected):  # type: ignore[call-overload]
        raise SystemExit(f"{variant} imported eventbus from elsewhere than {expected}")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", default="35da31a~1",
                        help="the commit to compare the trio client with (default: the one"
                             " before the sans-IO client core)")
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    before = subprocess.run(["git", "rev-parse", "--short", args.before], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.strip()
    variants = [f"trio@{before}", "trio", "asyncio"]
    port = run.free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "eventbus", "serve", "benchmarks.apps.eventbus_app:bus",
         "--port", str(port), "--log-level", "warning"], cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"ws://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                client_run("trio", url, argparse.Namespace(calls=1, warmup=0))
                break
            except subprocess.CalledProcessError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.2)
        runs: dict[str, list[dict[str, float]]] = {variant: [] for variant in variants}
        for rep in range(args.reps):
            order = variants[rep % len(variants):] + variants[:rep % len(variants)]
            for variant in order:
                runs[variant].append(client_run(variant, url, args))
                print(f"rep {rep + 1} {variant}: {runs[variant][-1]}", file=sys.stderr)
    finally:
        server.terminate()
        server.wait(10)
    summary = {}
    for variant, results in runs.items():
        summary[variant] = {
            "calls_per_s": round(statistics.median(args.calls / r["wall"] for r in results)),
            "client_cpu_us_per_call": round(statistics.median(
                1e6 * r["cpu"] / args.calls for r in results), 1),
        }
    first = summary[variants[0]]
    for entry in summary.values():
        entry["calls_per_s_ratio"] = round(entry["calls_per_s"] / first["calls_per_s"], 3)
        entry["cpu_ratio"] = round(entry["client_cpu_us_per_call"]
                                   / first["client_cpu_us_per_call"], 3)
    report = {"calls": args.calls, "reps": args.reps, "before": before, "variants": summary,
              "runs": runs}
    text = json.dumps(report, indent=2)
    print(json.dumps(summary, indent=2))
    if args.out is not None:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
