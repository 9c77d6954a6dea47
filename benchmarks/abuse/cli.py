"""The command line of the abuse suite: ``python3 benchmarks/abuse.py --help``."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from . import bystander, floods, runner
from .runner import RESULTS, ROOT, SCENARIOS, capture, say
from .verdict import judge, markdown_table

__all__ = ["main"]

_SUFFIXES = {"k": 1024, "m": 1024**2, "g": 1024**3}


def size(text: str) -> int:
    """``123``, ``64k``, ``16MiB``, ``3G``: bytes."""
    value = text.strip().lower().removesuffix("ib").removesuffix("b")
    scale = _SUFFIXES.get(value[-1:], 1)
    return int(float(value[:-1] if scale > 1 else value) * scale)


def setting(text: str) -> tuple[str, Any]:
    name, sep, raw = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"--setting takes NAME=VALUE, not {text!r}")
    try:
        return name, json.loads(raw)
    except ValueError:
        return name, raw


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="benchmarks/abuse.py",
        description="Floods from one abusive client against a live eventbus server, "
        "with a bystander's echo round trips and the server's memory measured.")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 1 s per flood, about 25 s in all")
    parser.add_argument("--seconds", type=float,
                        help="seconds each flood lasts (default 10; --quick 1)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help="comma-separated, from: " + ", ".join(SCENARIOS))
    parser.add_argument("--out", type=Path, help="results JSON (default benchmarks/results/"
                        "abuse-latest.json; quick-abuse.json with --quick)")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    parser.add_argument("--eventbus-python", default=str(ROOT / ".venv" / "bin" / "python"),
                        help="interpreter that runs the server (default: the project's .venv)")
    parser.add_argument("--server-ref", metavar="COMMIT",
                        help="run the server from this commit's eventbus package (extracted "
                        "with git archive) instead of the working tree, e.g. to measure "
                        "before and after")
    parser.add_argument("--memory-bound", type=size,
                        help="per-connection memory bound to judge by, e.g. 16MiB (default: "
                        "the server's setting, if it has one; else inbox_bytes + "
                        "send_queue_bytes + 2 x max_frame; else "
                        f"{runner.MEMORY_BOUND_FALLBACK // 1024**2} MiB)")
    parser.add_argument("--setting", type=setting, action="append", default=[],
                        metavar="NAME=VALUE",
                        help="a server setting for the abuse app (JSON value), e.g. rate=0; "
                        "repeatable")
    parser.add_argument("--rss-cap", type=size, default=runner.RSS_CAP,
                        help="kill the server when its RSS passes this (default 3GiB)")
    parser.add_argument("--quiet-wait", type=float,
                        help="seconds to wait before each scenario for other processes to "
                        "leave the CPU idle (default 5; --quick 0)")
    parser.add_argument("--samples", action="store_true",
                        help="keep every bystander round trip in the JSON, as [s since the "
                        "flood began, ms]")
    parser.add_argument("--nice", type=int, default=0,
                        help="run the server and the bystander at this nice level, and their "
                        "sessions' autogroups too, the abuser 10 lower (e.g. -10 on a machine "
                        "shared with other work; needs root for < 0)")
    parser.add_argument("--no-pin", action="store_true",
                        help="do not pin the server and the clients to cores 0 and 1")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_abuser":
        return floods.main(argv[1:])
    if argv and argv[0] == "_bystander":
        return bystander.main(argv[1:])
    args = build_parser().parse_args(argv)
    names = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown:
        sys.exit(f"abuse: unknown scenario {', '.join(unknown)}; choose from "
                 f"{', '.join(SCENARIOS)}")
    if not Path(args.eventbus_python).exists():
        sys.exit(f"abuse: no interpreter at {args.eventbus_python} (run python3 dev.py first)")
    if args.quiet_wait is None:
        args.quiet_wait = 0.0 if args.quick else 5.0
    out = args.out or RESULTS / ("quick-abuse.json" if args.quick else "abuse-latest.json")
    # The servers' logs: benchmarks/results/tmp/abuse-<scenario>.log by default.
    args.logs = out.parent / "tmp"

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if args.setting:
        env["EVENTBUS_ABUSE_SETTINGS"] = json.dumps(dict(args.setting))
    tree = runner.server_tree(args.server_ref)
    settings = runner.server_settings(args.eventbus_python, runner.server_env(env, tree), tree)
    if not settings:
        sys.exit(f"abuse: cannot load {runner.APP} with {args.eventbus_python}")
    bound, bound_source = runner.memory_bound(settings, args.memory_bound)
    help_text = capture([args.eventbus_python, "-m", "eventbus", "serve", "--help"],
                        runner.server_env(env, tree), tree)
    serve_flags = {word.strip("[],") for word in help_text.split() if word.startswith("--")}
    say(f"memory bound {bound / 1024**2:.1f} MiB per connection ({bound_source}); "
        f"eventbus serve --max-connections: "
        f"{'present' if '--max-connections' in serve_flags else 'absent'}")

    meta: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "quick": args.quick,
        "git": capture(["git", "describe", "--always", "--dirty"]),
        "server_ref": args.server_ref,
        "server_tree": str(tree.relative_to(ROOT)) if tree != ROOT else ".",
        # The server measured: the last commit that changed it, and (working tree
        # only) what was uncommitted in eventbus/ at the time.
        "server_commit": capture(["git", "log", "-1", "--format=%h %s",
                                  *([args.server_ref] if args.server_ref else []),
                                  "--", "eventbus/server"]),
        "eventbus_changes": "" if args.server_ref else
        capture(["git", "status", "--porcelain", "--", "eventbus"]),
        "settings": settings, "setting_overrides": dict(args.setting),
        "memory_bound": bound, "memory_bound_source": bound_source,
        "max_connections_flag": "--max-connections" in serve_flags,
        "goals": {"p99_limit_ms": runner.P99_LIMIT_MS, "p99_idle_factor": runner.P99_IDLE_FACTOR,
                  "newcomer_deadline_s": runner.NEWCOMER_DEADLINE_S},
        "method": {"bystander_rate": runner.BYSTANDER_RATE, "fd_limit": runner.FD_LIMIT,
                   "nice": args.nice, "quiet_wait": args.quiet_wait,
                   "phases": runner.QUICK if args.quick else runner.FULL,
                   "flood_s": args.seconds, "rss_cap": args.rss_cap,
                   "payload_bytes": floods.PAYLOAD_BYTES,
                   "error_text_bytes": floods.ERROR_TEXT_BYTES},
        "machine": {"cpus": os.cpu_count(), "kernel": platform.release(),
                    "python": platform.python_version()},
    }
    records = []
    begun = time.monotonic()
    for name in names:
        say(f"{name}: {SCENARIOS[name]} ...")
        record = runner.Scenario(name, args, serve_flags, env, settings, tree).run()
        record["result"] = judge(record, bound)
        records.append(record)
        result = record["result"]
        say(f"  {result['verdict']}" + (f" ({', '.join(result['failed'])})"
                                         if result["failed"] else "")
            + (f": {record['error']}" if "error" in record else ""))
    meta["elapsed_s"] = round(time.monotonic() - begun, 1)
    table = markdown_table(records)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "scenarios": records}, indent=1) + "\n")
    if args.markdown:
        args.markdown.write_text(table + "\n")
    print(table)
    print(f"\nresults: {out} ({meta['elapsed_s']} s)")
    verdicts = {record["result"]["verdict"] for record in records}
    return 2 if "ERROR" in verdicts else 1 if "FAIL" in verdicts else 0
