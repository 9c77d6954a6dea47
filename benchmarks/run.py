#!/usr/bin/env python3
"""Run the eventbus benchmark suite (standard library only).

    python3 benchmarks/run.py                 # everything: 5 servers, W1-W5, 3 repetitions
    python3 benchmarks/run.py --quick         # seconds, tiny sizes, eventbus only
    python3 benchmarks/run.py --servers eventbus,socketio-py --workloads W1,W2 --reps 5
    python3 benchmarks/run.py --profile W1,W2 # afterwards, py-spy profiles of eventbus

It sets up what it needs: ``npm ci`` in benchmarks/ (the ws load generator and the
Node socket.io peer) and, when a Python peer runs or the report is drawn, the venv
benchmarks/.venv-peers from benchmarks/requirements.txt (python-socketio, aiohttp,
uvloop, matplotlib, py-spy). The eventbus server and the raw trio echo servers run
from the project's own venv (.venv, made by ``python3 dev.py``; ``--eventbus-python``
picks another interpreter), so they measure the working tree.

Each run starts its server fresh, pinned to core 0 (``taskset -c 0``), and the load
generator pinned to core 1; traffic goes to 127.0.0.1 only. Every run has a hard
timeout. A run with any loss or error is a failed run and gives no number.

A full run writes benchmarks/results/latest.json and renders docs/benchmarks.md
with docs/benchmarks.png; ``--quick`` writes benchmarks/results/quick.json only.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PEERS_VENV = HERE / ".venv-peers"
PEERS_PYTHON = PEERS_VENV / "bin" / "python"
REQUIREMENTS = HERE / "requirements.txt"
LOADGEN = HERE / "loadgen" / "loadgen.mjs"
RESULTS = HERE / "results"
PROFILES = HERE / "profiles"
LOGS = RESULTS / "tmp"

WORKLOADS = ["W1", "W2", "W3", "W4", "W5"]

# name: (label, generator flavor, workloads it serves)
SERVERS: dict[str, tuple[str, str, list[str]]] = {
    "eventbus": ("eventbus", "eventbus", WORKLOADS),
    "socketio-py": ("python-socketio (aiohttp+uvloop)", "socketio", WORKLOADS),
    "socketio-node": ("Node socket.io", "socketio", WORKLOADS),
    "trio-websocket": ("raw trio-websocket echo", "raw", ["W1"]),
    "wsproto": ("raw wsproto-on-trio echo", "raw", ["W1"]),
}
ALIASES = {
    "socketio": "socketio-py", "python-socketio": "socketio-py",
    "node": "socketio-node", "node-socketio": "socketio-node", "socket.io": "socketio-node",
    "trio_websocket": "trio-websocket",
}
PEER_PYTHON_SERVERS = {"socketio-py"}

FULL: dict[str, dict[str, Any]] = {
    "W1": {"conns": 50, "warmup_s": 2, "duration_s": 10},
    "W2": {"members": 500, "messages": 2000, "window": 50, "deadline_s": 150,
           "open_concurrency": 100},
    "W3": {"conns": 5000, "concurrency": 100, "settle_s": 2, "warmup_conns": 10},
    "W4": {"conns": 50, "messages": 20, "window": 4, "size": 16384, "deadline_s": 120,
           "open_concurrency": 50},
    "W5": {"members": 500, "messages": 2000, "window": 50, "deadline_s": 150,
           "open_concurrency": 100},
}
QUICK: dict[str, dict[str, Any]] = {
    "W1": {"conns": 5, "acks": 200},
    "W2": {"members": 20, "messages": 100, "window": 50, "deadline_s": 20},
    "W3": {"conns": 100, "concurrency": 50, "settle_s": 0.5, "warmup_conns": 2},
    "W4": {"conns": 5, "messages": 10, "window": 4, "size": 16384, "deadline_s": 20},
    "W5": {"members": 20, "messages": 100, "window": 50, "deadline_s": 20},
}
# Seconds a run may take beyond its own deadline (connecting, joining, closing).
MARGIN = {"W1": 30, "W2": 60, "W3": 90, "W4": 60, "W5": 60}

# The number each workload is judged by: (metric, higher is better, unit).
PRIMARY = {
    "W1": ("acks_per_s", True, "acks/s"),
    "W2": ("deliveries_per_s", True, "deliveries/s"),
    "W3": ("bytes_per_conn", False, "bytes/conn"),
    "W4": ("mb_per_s", True, "MB/s"),
    "W5": ("deliveries_per_s", True, "deliveries/s"),
}
SECONDARY = {
    "W1": ["p50_ms", "p99_ms", "server_us_per_op"],
    "W2": ["seconds_to_last_delivery", "server_us_per_op"],
    "W3": ["open_s", "server_us_per_op"],
    "W4": ["seconds_to_last_delivery", "server_us_per_op"],
    "W5": ["seconds_to_last_delivery", "server_us_per_op"],
}
# What one operation is, for the server's CPU cost per operation (server_us_per_op):
# an ack, a delivery, an opened connection.
OPS = {"W1": "acks", "W2": "deliveries", "W3": "conns", "W4": "deliveries",
       "W5": "deliveries"}
# Targets from the issue: eventbus / python-socketio.
TARGETS = {"W1": 1.5, "W2": 4.0, "W3": 0.55, "W4": 2.0, "W5": 2.0}
SATURATED = 0.90  # load generator CPU share of one core above which it is the limit
# The machine may be shared (other people's test runs): before each run, wait for
# the load to fall below QUIET cores; a run during which other processes took more
# than CONTENDED cores is repeated (up to --retries times) and flagged if it stays so.
QUIET = 0.15
CONTENDED = 0.25


def say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# --- setup ------------------------------------------------------------------------------


def ensure_node() -> str:
    node = shutil.which("node")
    npm = shutil.which("npm")
    if node is None or npm is None:
        sys.exit("bench: node and npm are needed (the load generator runs on Node)")
    lock = HERE / "package-lock.json"
    stamp = HERE / "node_modules" / ".bench-installed"
    digest = hashlib.sha256(lock.read_bytes()).hexdigest()
    if not stamp.exists() or stamp.read_text() != digest:
        say("npm ci in benchmarks/")
        subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                       cwd=HERE, check=True, stdout=sys.stderr)
        stamp.write_text(digest)
    return node


def ensure_peers_venv() -> Path:
    stamp = PEERS_VENV / ".bench-installed"
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if PEERS_PYTHON.exists() and stamp.exists() and stamp.read_text() == digest:
        return PEERS_PYTHON
    if not PEERS_PYTHON.exists():
        say(f"creating {PEERS_VENV.relative_to(ROOT)}")
        subprocess.run([sys.executable, "-m", "venv", str(PEERS_VENV)], check=True)
    say(f"installing {REQUIREMENTS.relative_to(ROOT)} into {PEERS_VENV.relative_to(ROOT)}")
    subprocess.run([str(PEERS_PYTHON), "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)],
                   check=True, stdout=sys.stderr)
    stamp.write_text(digest)
    return PEERS_PYTHON


def raise_fd_limit() -> int:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for wanted in (65536, hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(wanted, hard)))
            break
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def busy_cores(interval: float = 0.5) -> float:
    """How many cores' worth of CPU the whole machine used over ``interval`` seconds."""

    def sample() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]
        return sum(fields[:8]) - idle, sum(fields[:8])

    try:
        busy0, total0 = sample()
        time.sleep(interval)
        busy1, total1 = sample()
    except (OSError, ValueError, IndexError):
        return 0.0
    cpus = os.cpu_count() or 1
    return cpus * (busy1 - busy0) / max(1, total1 - total0)


def wait_quiet(limit: float) -> tuple[float, float]:
    """Wait (at most ``limit`` seconds) until other processes leave the machine idle.

    Returns the seconds waited and the load (in cores) seen last.
    """
    started = time.monotonic()
    load = busy_cores()
    while load > QUIET and time.monotonic() - started < limit:
        time.sleep(1.0)
        load = busy_cores()
    return time.monotonic() - started, load


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def capture(cmd: list[str], cwd: Path = ROOT) -> str:
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=60,
                              check=False).stdout.strip()
    except OSError:
        return ""


def machine_info() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "cpu_model": model,
        "cpus": os.cpu_count(),
        "memory_gib": round(mem_kib / 1048576, 1),
        "kernel": platform.release(),
        "os": platform.platform(),
    }


_VERSIONS_SNIPPET = """
import json, sys
from importlib.metadata import version, PackageNotFoundError
out = {"python": sys.version.split()[0]}
for name in sys.argv[1:]:
    try:
        out[name] = version(name)
    except PackageNotFoundError:
        pass
print(json.dumps(out))
"""


def python_versions(python: Path | str, packages: list[str]) -> dict[str, str]:
    text = capture([str(python), "-c", _VERSIONS_SNIPPET, *packages])
    try:
        found: dict[str, str] = json.loads(text)
    except ValueError:
        return {}
    return found


def node_versions(node: str) -> dict[str, str]:
    out = {"node": capture([node, "--version"]).lstrip("v")}
    for name in ("ws", "socket.io", "engine.io", "@msgpack/msgpack", "bufferutil"):
        package = HERE / "node_modules" / name / "package.json"
        with contextlib.suppress(OSError, ValueError):
            out[name] = json.loads(package.read_text())["version"]
    return out


# --- one run ----------------------------------------------------------------------------


class Server:
    def __init__(self, name: str, cmd: list[str], cwd: Path, log: Path) -> None:
        self.name = name
        self.log = log
        self._log_file = log.open("wb")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(cmd, cwd=cwd, stdout=self._log_file,
                                     stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, port: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: "
                                   f"{self.log_tail()}")
            with socket.socket() as sock:
                sock.settimeout(0.5)
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not listen on port {port} within {timeout} s")

    def status_kib(self, field: str) -> int | None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        return None

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log_file.close()

    def log_tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""


class Runner:
    def __init__(self, args: argparse.Namespace, node: str, peers_python: Path | None) -> None:
        self.args = args
        self.node = node
        self.peers_python = peers_python
        self.eventbus_python = args.eventbus_python
        self.params = QUICK if args.quick else FULL
        self.pin = shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
        self.clock_ticks = os.sysconf("SC_CLK_TCK")
        self.busy = False

    def taskset(self, core: int) -> list[str]:
        prefix = ["nice", "-n", str(self.args.nice)] if self.args.nice else []
        return prefix + (["taskset", "-c", str(core)] if self.pin else [])

    def prioritize(self, pid: int) -> None:
        """With --nice, also set the nice level of the process's autogroup: with
        autogrouping (Linux's default), CPU time is first shared between sessions, so a
        nice level alone does not compete with other sessions' processes."""
        if self.args.nice:
            with contextlib.suppress(OSError):
                Path(f"/proc/{pid}/autogroup").write_text(str(self.args.nice))

    def server_cmd(self, server: str, port: int) -> tuple[list[str], Path]:
        apps = HERE / "apps"
        if server == "eventbus":
            return [self.eventbus_python, "-m", "eventbus", "serve",
                    "benchmarks.apps.eventbus_app:bus", "--port", str(port),
                    "--log-level", "warning"], ROOT
        if server == "socketio-py":
            assert self.peers_python is not None
            return [str(self.peers_python), str(apps / "socketio_app.py"), "--port",
                    str(port)], ROOT
        if server == "socketio-node":
            return [self.node, str(apps / "socketio_server.mjs"), "--port", str(port)], HERE
        if server == "trio-websocket":
            return [self.eventbus_python, str(apps / "trio_websocket_echo.py"), "--port",
                    str(port)], ROOT
        if server == "wsproto":
            return [self.eventbus_python, str(apps / "wsproto_echo.py"), "--port",
                    str(port)], ROOT
        raise ValueError(server)

    def run_one(self, server: str, workload: str, rep: int,
                profile: bool = False) -> dict[str, Any]:
        label, flavor, _ = SERVERS[server]
        params = self.params[workload]
        port = free_port()
        cmd, cwd = self.server_cmd(server, port)
        LOGS.mkdir(parents=True, exist_ok=True)
        log = LOGS / f"{server}-{workload}-{rep}.log"
        record: dict[str, Any] = {
            "server": server, "label": label, "workload": workload, "rep": rep,
            "params": params, "ok": False,
        }
        srv = Server(server, self.taskset(0) + cmd, cwd, log)
        self.prioritize(srv.pid)
        spy: subprocess.Popen[bytes] | None = None
        try:
            srv.wait_ready(port)
            time.sleep(0.2)
            if profile:
                spy = self.start_profiler(srv.pid, workload)
            timeout = params.get("deadline_s", 0) + params.get("duration_s", 0) + \
                params.get("warmup_s", 0) + MARGIN[workload]
            config = {
                "workload": workload, "flavor": flavor, "url": f"ws://127.0.0.1:{port}/",
                "serverPid": srv.pid, "clockTicks": self.clock_ticks, "timeout": timeout,
                "params": params,
            }
            started = time.monotonic()
            if profile:
                dump_at = started + params.get("warmup_s", 0) + \
                    params.get("duration_s", 4) / 2
            gen = subprocess.Popen(
                [*self.taskset(1), self.node, str(LOADGEN), json.dumps(config)],
                cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                start_new_session=True,
            )
            self.prioritize(gen.pid)
            if profile:
                self.dump_stacks(srv.pid, workload, gen, dump_at)
            try:
                out, err = gen.communicate(timeout=timeout + 15)
            except subprocess.TimeoutExpired:
                gen.kill()
                out, err = gen.communicate()
                record["errors"] = [f"load generator killed after {timeout + 15} s"]
                return record
            record["elapsed_s"] = time.monotonic() - started
            try:
                result = json.loads(out.decode().strip().splitlines()[-1])
            except (ValueError, IndexError):
                record["errors"] = [f"load generator failed ({gen.returncode}): "
                                    f"{err.decode(errors='replace')[-2000:]}"]
                return record
            ops_key = OPS[workload]
            ops = result["metrics"].get(ops_key)
            server_cpu = (result.get("cpu") or {}).get("server_cpu_s")
            if ops and server_cpu is not None:
                # Contention-robust cost: the server's own CPU time per operation.
                result["metrics"]["server_us_per_op"] = 1e6 * server_cpu / ops
            record.update({
                "ok": bool(result["ok"]) and srv.proc.poll() is None,
                "metrics": result["metrics"], "cpu": result["cpu"], "losses": result["losses"],
                "errors": result["errors"], "error_count": result["errorCount"],
                "server_peak_rss_kib": srv.status_kib("VmHWM"),
            })
            if srv.proc.poll() is not None:
                record["errors"].append(f"server exited during the run: {srv.log_tail()}")
        except RuntimeError as exc:
            record["errors"] = [str(exc)]
        finally:
            if spy is not None:
                self.stop_profiler(spy)
            srv.stop()
            if not record["ok"]:
                record["server_log_tail"] = srv.log_tail()
        return record

    def run_contention_aware(self, server: str, workload: str, rep: int) -> dict[str, Any]:
        best: dict[str, Any] | None = None
        for attempt in range(self.args.retries + 1):
            # After a wait that ran out, the machine is busy for longer stretches: wait
            # only briefly, and do not repeat contended runs (they would be so again).
            limit = min(self.args.quiet_wait, 5.0) if self.busy else self.args.quiet_wait
            waited, load = wait_quiet(limit)
            self.busy = load > QUIET
            if self.busy:
                say(f"  machine busy ({load:.2f} cores used by other processes after "
                    f"{waited:.0f} s); running anyway")
            record = self.run_one(server, workload, rep)
            record["attempt"] = attempt + 1
            record["load_before"] = round(load, 3)
            foreign = (record.get("cpu") or {}).get("foreign_cpu")
            record["contended"] = foreign is not None and foreign > CONTENDED
            if best is None or (record["ok"], not record["contended"]) > \
                    (best["ok"], not best["contended"]):
                best = record
            if not record["contended"] or not record["ok"] or self.busy:
                break
            say(f"  contended: other processes took {foreign:.2f} cores; repeating")
        assert best is not None
        return best

    # --- py-spy ---------------------------------------------------------------------

    def py_spy(self) -> str:
        assert self.peers_python is not None
        return str(self.peers_python.parent / "py-spy")

    def start_profiler(self, pid: int, workload: str) -> subprocess.Popen[bytes]:
        PROFILES.mkdir(exist_ok=True)
        out = PROFILES / f"eventbus-{workload}.txt"
        return subprocess.Popen(
            [*self.taskset(1), self.py_spy(), "record", "--pid", str(pid), "--rate", "200",
             "--nonblocking", "--format", "raw", "-o", str(out)],
            stdout=subprocess.DEVNULL, stderr=(PROFILES / f"eventbus-{workload}.log").open("wb"),
        )

    def dump_stacks(self, pid: int, workload: str, gen: subprocess.Popen[bytes],
                    at: float) -> None:
        while time.monotonic() < at and gen.poll() is None:
            time.sleep(0.1)
        if gen.poll() is None:
            text = capture([self.py_spy(), "dump", "--pid", str(pid)])
            (PROFILES / f"eventbus-{workload}-dump.txt").write_text(text + "\n")

    def stop_profiler(self, spy: subprocess.Popen[bytes]) -> None:
        spy.send_signal(signal.SIGINT)
        try:
            spy.wait(20)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait()


# --- summaries --------------------------------------------------------------------------


def stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}


def summarize(runs: list[dict[str, Any]], servers: list[str],
              workloads: list[str]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for workload in workloads:
        metric, _, _ = PRIMARY[workload]
        per_server: dict[str, Any] = {}
        for server in servers:
            mine = [r for r in runs if r["server"] == server and r["workload"] == workload]
            if not mine:
                continue
            good = [r for r in mine if r["ok"]]
            entry: dict[str, Any] = {"runs": len(mine), "failed": len(mine) - len(good)}
            for name in [metric, *SECONDARY[workload]]:
                entry[name] = stats([r["metrics"][name] for r in good
                                     if r["metrics"].get(name) is not None])
            for name in ("loadgen_cpu", "server_cpu", "foreign_cpu"):
                entry[name] = stats([r["cpu"][name] for r in good
                                     if r.get("cpu") and r["cpu"].get(name) is not None])
            entry["loadgen_saturated_runs"] = sum(
                1 for r in good if r.get("cpu") and (r["cpu"].get("loadgen_cpu") or 0) >= SATURATED)
            entry["contended_runs"] = sum(1 for r in good if r.get("contended"))
            per_server[server] = entry
        ratios: dict[str, Any] = {}
        for peer in ("socketio-py", "socketio-node"):
            values = []
            for rep in sorted({r["rep"] for r in runs}):
                mine = [r for r in runs if r["rep"] == rep and r["workload"] == workload
                        and r["server"] == "eventbus" and r["ok"]]
                theirs = [r for r in runs if r["rep"] == rep and r["workload"] == workload
                          and r["server"] == peer and r["ok"]]
                if mine and theirs and theirs[0]["metrics"].get(metric):
                    values.append(mine[0]["metrics"][metric] / theirs[0]["metrics"][metric])
            if values:
                ratios[peer] = stats(values)
        cost_ratios: dict[str, Any] = {}
        for peer in ("socketio-py", "socketio-node"):
            values = []
            for rep in sorted({r["rep"] for r in runs}):
                mine = [r for r in runs if r["rep"] == rep and r["workload"] == workload
                        and r["server"] == "eventbus" and r["ok"]]
                theirs = [r for r in runs if r["rep"] == rep and r["workload"] == workload
                          and r["server"] == peer and r["ok"]]
                if mine and theirs and mine[0]["metrics"].get("server_us_per_op") and \
                        theirs[0]["metrics"].get("server_us_per_op"):
                    # peer's cost / eventbus's cost: above 1 means eventbus is cheaper.
                    values.append(theirs[0]["metrics"]["server_us_per_op"]
                                  / mine[0]["metrics"]["server_us_per_op"])
            if values:
                cost_ratios[peer] = stats(values)
        summary[workload] = {"metric": metric, "servers": per_server, "ratios": ratios,
                             "cost_ratios": cost_ratios}
    return summary


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def print_table(summary: dict[str, Any]) -> None:
    for workload, data in summary.items():
        metric, _, unit = PRIMARY[workload]
        print(f"\n{workload}  {metric} ({unit}): median [min-max]; loadgen / server CPU")
        for server, entry in data["servers"].items():
            value = entry[metric]
            if value is None:
                print(f"  {server:15s} FAILED ({entry['failed']} of {entry['runs']} runs)")
                continue
            extra = "  ".join(
                f"{name}={fmt(entry[name]['median'])}" for name in SECONDARY[workload]
                if entry.get(name))
            cpu = entry["loadgen_cpu"]
            scpu = entry["server_cpu"]
            sat = " SATURATED" if entry["loadgen_saturated_runs"] else ""
            if entry["contended_runs"]:
                sat += f" CONTENDED({entry['contended_runs']})"
            print(f"  {server:15s} {fmt(value['median']):>12s} [{fmt(value['min'])}-"
                  f"{fmt(value['max'])}]  {extra}  cpu {fmt(cpu and cpu['median'])}/"
                  f"{fmt(scpu and scpu['median'])}{sat}"
                  + (f"  ({entry['failed']} failed)" if entry["failed"] else ""))
        for peer, ratio in data["ratios"].items():
            target = f" (target {'<=' if workload == 'W3' else '>='}{TARGETS[workload]}x)" \
                if peer == "socketio-py" else ""
            cost = data["cost_ratios"].get(peer)
            cost_text = f"; server CPU per op: {peer} / eventbus = {fmt(cost['median'])}x" \
                if cost else ""
            print(f"  eventbus / {peer}: {fmt(ratio['median'])}x "
                  f"[{fmt(ratio['min'])}-{fmt(ratio['max'])}]{target}{cost_text}")


# --- profiles ---------------------------------------------------------------------------


def summarize_profile(path: Path, top: int = 25) -> tuple[str, dict[str, Any]]:
    """Self and total share of samples per function from py-spy's raw (collapsed) output."""
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        samples += count
        frames = [_frame_name(frame) for frame in stack.split(";") if frame]
        if not frames:
            continue
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for name in set(frames):
            total[name] = total.get(name, 0) + count
    samples = max(samples, 1)
    lines = [f"{path.name}: {samples} samples", "", "self %  function"]
    for name, count in sorted(own.items(), key=lambda item: -item[1])[:top]:
        lines.append(f"{100 * count / samples:6.1f}  {name}")
    lines += ["", "total %  function (inclusive)"]
    for name, count in sorted(total.items(), key=lambda item: -item[1])[:top]:
        lines.append(f"{100 * count / samples:6.1f}  {name}")
    found = {
        "samples": samples,
        "self": [[round(100 * c / samples, 2), n] for n, c in
                 sorted(own.items(), key=lambda item: -item[1])[:top]],
        "total": [[round(100 * c / samples, 2), n] for n, c in
                  sorted(total.items(), key=lambda item: -item[1])[:top]],
    }
    return "\n".join(lines) + "\n", found


def _frame_name(frame: str) -> str:
    # "function (path/to/file.py:123)" -> "function (file.py)"
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    file = where.rsplit(":", 1)[0]
    if "site-packages/" in file:
        file = file.split("site-packages/", 1)[1]
    elif "/eventbus/" in file:
        file = "eventbus/" + file.split("/eventbus/", 1)[1]
    else:
        file = Path(file).name
    return f"{name} ({file})" if file else name


# --- main -------------------------------------------------------------------------------


def parse_list(text: str, known: list[str], aliases: dict[str, str], what: str) -> list[str]:
    out = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        name = aliases.get(item, item)
        if name not in known:
            sys.exit(f"bench: unknown {what} {item!r}; choose from {', '.join(known)}")
        out.append(name)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes, one repetition, eventbus only unless --servers")
    parser.add_argument("--servers", help="comma-separated: " + ", ".join(SERVERS))
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated")
    parser.add_argument("--reps", type=int,
                        help="repetitions (default 3; --quick 1; 0 with --profile: profile only)")
    parser.add_argument("--out", type=Path, help="results JSON (default benchmarks/results/"
                        "latest.json, or quick.json with --quick)")
    parser.add_argument("--report", type=Path,
                        help="markdown report to write (default docs/benchmarks.md for a full "
                        "run of every server and workload, none otherwise)")
    parser.add_argument("--no-report", action="store_true", help="write no report")
    parser.add_argument("--eventbus-python", default=str(ROOT / ".venv" / "bin" / "python"),
                        help="interpreter for the eventbus and raw trio servers "
                        "(default: the project's .venv)")
    parser.add_argument("--retries", type=int,
                        help="repeat a run during which other processes used the CPU "
                        "(default 2 times; --quick 0)")
    parser.add_argument("--quiet-wait", type=float,
                        help="seconds to wait for an idle machine before each run "
                        "(default 60; --quick 0)")
    parser.add_argument("--nice", type=int, default=0,
                        help="run servers and the load generator at this nice level, and "
                        "their sessions' autogroups too (e.g. -10 on a machine shared with "
                        "other work; needs root for < 0)")
    parser.add_argument("--profile", default="",
                        help="after the runs, profile eventbus in these workloads with py-spy "
                        "(e.g. W1,W2); output in benchmarks/profiles/")
    args = parser.parse_args()

    default_servers = "eventbus" if args.quick else ",".join(SERVERS)
    servers = parse_list(args.servers or default_servers, list(SERVERS), ALIASES, "server")
    workloads = parse_list(args.workloads, WORKLOADS, {}, "workload")
    profile = parse_list(args.profile, WORKLOADS, {}, "workload")
    reps = args.reps if args.reps is not None else (1 if args.quick else 3)
    if args.retries is None:
        args.retries = 0 if args.quick else 2
    if args.quiet_wait is None:
        args.quiet_wait = 0.0 if args.quick else 60.0
    everything = set(servers) == set(SERVERS) and set(workloads) == set(WORKLOADS)
    report = None if args.no_report else (
        args.report or (ROOT / "docs" / "benchmarks.md" if everything and not args.quick
                        else None))
    out = args.out or RESULTS / ("quick.json" if args.quick else "latest.json")

    if not Path(args.eventbus_python).exists():
        dev = ROOT / "dev.py"
        say(f"{args.eventbus_python} is missing: setting up the project venv with dev.py")
        subprocess.run([sys.executable, str(dev), "lint"], cwd=ROOT, check=False,
                       stdout=subprocess.DEVNULL)
        if not Path(args.eventbus_python).exists():
            sys.exit(f"bench: no eventbus interpreter at {args.eventbus_python}")
    node = ensure_node()
    needs_peers = bool(set(servers) & PEER_PYTHON_SERVERS) or report is not None or profile
    peers_python = ensure_peers_venv() if needs_peers else None
    fd_limit = raise_fd_limit()
    runner = Runner(args, node, peers_python)
    if not runner.pin:
        say("warning: no taskset or fewer than 2 cores: server and load generator not pinned")

    meta: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "quick": args.quick, "reps": reps, "servers": servers, "workloads": workloads,
        "params": {w: runner.params[w] for w in workloads},
        "machine": machine_info(), "fd_limit": fd_limit, "pinned": runner.pin,
        "nice": args.nice, "contended_threshold": CONTENDED, "quiet_threshold": QUIET,
        "saturation_threshold": SATURATED, "targets": TARGETS,
        "labels": {name: SERVERS[name][0] for name in servers},
        "git": capture(["git", "describe", "--always", "--dirty"]),
        # Uncommitted changes to the server code measured (the working tree is measured).
        "eventbus_changes": capture(["git", "status", "--porcelain", "--", "eventbus"]),
        "versions": {
            "eventbus server": python_versions(args.eventbus_python, [
                "eventbus", "trio", "wsproto", "h11", "trio-websocket", "msgpack", "attrs",
                "cattrs"]),
            "node": node_versions(node),
        },
    }
    if peers_python is not None:
        meta["versions"]["python peers"] = python_versions(peers_python, [
            "python-socketio", "python-engineio", "aiohttp", "uvloop", "matplotlib", "py-spy"])

    runs: list[dict[str, Any]] = []
    begun = time.monotonic()
    for rep in range(1, reps + 1):
        shift = (rep - 1) % len(servers)
        order = servers[shift:] + servers[:shift]
        for workload in workloads:
            for server in order:
                if workload not in SERVERS[server][2]:
                    continue
                say(f"rep {rep}/{reps} {workload} {server} ...")
                record = runner.run_contention_aware(server, workload, rep)
                runs.append(record)
                metric = PRIMARY[workload][0]
                if record["ok"]:
                    cpu = record.get("cpu") or {}
                    say(f"  {metric}={fmt(record['metrics'].get(metric))} loadgen cpu="
                        f"{fmt(cpu.get('loadgen_cpu'))} server cpu={fmt(cpu.get('server_cpu'))}")
                else:
                    say(f"  FAILED: {'; '.join(record.get('errors') or [])[:1500]}")
    meta["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    meta["elapsed_s"] = round(time.monotonic() - begun, 1)

    summary = summarize(runs, servers, workloads)
    result = {"meta": meta, "runs": runs, "summary": summary}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print_table(summary)
    print(f"\nresults: {out} ({meta['elapsed_s']} s)")

    profiles: dict[str, Any] = {}
    for workload in profile:
        say(f"profiling eventbus in {workload} with py-spy")
        record = runner.run_one("eventbus", workload, 0, profile=True)
        raw = PROFILES / f"eventbus-{workload}.txt"
        if raw.exists():
            text, top = summarize_profile(raw)
            profiles[workload] = top
            (PROFILES / f"eventbus-{workload}-top.txt").write_text(text)
            print(f"\n{text}")
        else:
            say(f"no profile for {workload} (see {PROFILES / f'eventbus-{workload}.log'})")
        say(f"  profiled run ok={record['ok']}")
    if profiles:
        meta["profiles"] = profiles
        out.write_text(json.dumps(result, indent=1) + "\n")

    if report is not None:
        assert peers_python is not None
        subprocess.run([str(peers_python), str(HERE / "report.py"), str(out), str(report)],
                       check=True)
        print(f"report: {report}")
    failed = [r for r in runs if not r["ok"]]
    if failed:
        say(f"{len(failed)} of {len(runs)} runs FAILED")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
