#!/usr/bin/env python3
"""Run the eventbus benchmark suite (standard library only).

    python3 benchmarks/run.py                 # everything: 5 servers, W1-W5, 3 repetitions
    python3 benchmarks/run.py --quick         # seconds, tiny sizes, eventbus only
    python3 benchmarks/run.py --servers eventbus,socketio-py --workloads W1,W2 --reps 5
    python3 benchmarks/run.py --profile W1,W2 # afterwards, py-spy profiles of eventbus
    python3 benchmarks/run.py --scaleout      # W2: before/after, and 1 or 2 nodes on Redis
    python3 benchmarks/run.py --metrics-cost  # W1, W2: metrics off and on

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

Variants of the eventbus server (``--servers``), side by side with the others:
``eventbus@REF`` runs the ``eventbus`` package of commit REF (extracted with ``git
archive`` into benchmarks/results/tmp/server-<commit>/, first on PYTHONPATH) instead
of the working tree; ``eventbus+redisN`` (or ``eventbus@REF+redisN``) runs N nodes
of one bus joined through a Redis server that the runner starts on a free port for
the run (``redis-server --save "" --appendonly no``, 127.0.0.1) and stops after;
each run has its own key prefix. With N nodes (fan-out workloads only) the members
are spread over the nodes, a lone publisher is on the first, and the CPU per
delivery is reported per node too. ``--scaleout`` is the preset for the figures in
docs/benchmarks.md: W2 at ``--before`` (3fb6785) and at HEAD, and at HEAD on Redis
with one node and with two; it writes benchmarks/results/scaleout.json and the two
sections of docs/benchmarks.md that come from it.

Any variant may change settings of the app's bus: ``eventbus@HEAD[metrics=false]``
(ServerConfig fields, given to benchmarks/apps/eventbus_app.py in the environment
variable BENCH_EVENTBUS_SETTINGS). ``--metrics-cost`` is the preset for the section
"Metrics: the cost of counting": W1 and W2 at HEAD with metrics off and on, and at
``--before`` (6a53bc1, the commit before metrics); it writes
benchmarks/results/metrics.json and that section.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
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
    # The working tree's server with metrics off (see --metrics-cost).
    "eventbus-nometrics": "eventbus[metrics=false]",
}
PEER_PYTHON_SERVERS = {"socketio-py"}

# eventbus at another commit and/or as N nodes through Redis, and/or with settings of
# the app's bus changed: eventbus[@REF][+redis[N]][[NAME=VALUE,...]].
VARIANT = re.compile(r"^eventbus(?:@(?P<ref>[^+\s,\[\]]+))?(?:\+redis(?P<nodes>\d*))?"
                     r"(?:\[(?P<settings>[^\[\]]*)\])?$")
# The environment variable through which the runner gives apps/eventbus_app.py the
# settings of a variant (a JSON object of ServerConfig fields). Not EVENTBUS_*: those
# are `eventbus serve`'s own.
SETTINGS_ENV = "BENCH_EVENTBUS_SETTINGS"
# Workloads that several nodes serve (members spread over the nodes).
MULTI_NODE_WORKLOADS = ["W2", "W4", "W5"]
# --scaleout: "before" is the commit before the adapter seam and the Redis adapter.
SCALEOUT_BEFORE = "3fb6785"
SCALEOUT_RESULTS = "scaleout.json"
# --metrics-cost: W1 and W2 at HEAD with metrics off and on, and (the reference) at
# "before", the commit before the bus counted anything.
METRICS_BEFORE = "6a53bc1"
METRICS_RESULTS = "metrics.json"
METRICS_WORKLOADS = ["W1", "W2"]


@dataclass(frozen=True)
class Variant:
    """An eventbus server: the working tree or a commit's package, one node alone (the
    in-memory adapter) or ``nodes`` nodes through Redis."""

    name: str
    ref: str | None = None  # as given, e.g. HEAD
    commit: str | None = None  # short hash; None: the working tree
    subject: str = ""
    nodes: int = 1
    redis: bool = False
    #: Settings of the app's bus (ServerConfig fields) other than the app's own.
    settings: tuple[tuple[str, Any], ...] = ()

    @property
    def label(self) -> str:
        where = f"eventbus at {self.commit}" if self.commit else "eventbus (working tree)"
        if not self.redis:
            where += ", in-memory adapter"
        else:
            where += (", 1 node on Redis" if self.nodes == 1 else
                      f", {self.nodes} nodes on Redis")
        if self.settings:
            where += ", " + ", ".join(f"{k}={_setting_text(v)}" for k, v in self.settings)
        return where

    @property
    def workloads(self) -> list[str]:
        return MULTI_NODE_WORKLOADS if self.nodes > 1 else WORKLOADS


VARIANTS: dict[str, Variant] = {"eventbus": Variant("eventbus")}


def _setting_value(text: str) -> Any:
    """A setting's value as written in a variant's name: true/false, none, a number,
    else the text itself (a JSON string in quotes is taken as JSON)."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for kind in (int, float):
        with contextlib.suppress(ValueError):
            return kind(lowered)
    with contextlib.suppress(ValueError):
        if text.strip().startswith(('"', "[", "{")):
            return json.loads(text)
    return text.strip()


def _setting_text(value: Any) -> str:
    """A setting's value as it appears in a variant's canonical name."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value).replace("null", "none")
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str) and value == _setting_value(value):
        return value
    return json.dumps(value)


def parse_settings(text: str | None, where: str) -> tuple[tuple[str, Any], ...]:
    """``metrics=false,ping_interval=5`` -> ((name, value), ...), sorted by name."""
    if not text:
        return ()
    found: dict[str, Any] = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not name.isidentifier():
            sys.exit(f"bench: {where}: settings are NAME=VALUE, comma-separated, not {item!r}")
        found[name] = _setting_value(value)
    return tuple(sorted(found.items()))


def parse_variant(text: str) -> Variant | None:
    match = VARIANT.match(text)
    if match is None:
        return None
    settings = parse_settings(match.group("settings"), text)
    ref, nodes_text = match.group("ref"), match.group("nodes")
    redis = nodes_text is not None
    nodes = int(nodes_text) if nodes_text else 1
    if nodes < 1:
        sys.exit(f"bench: {text}: at least one node")
    commit = subject = None
    if ref is not None:
        commit = capture(["git", "rev-parse", "--short", f"{ref}^{{commit}}"])
        if not commit:
            sys.exit(f"bench: {text}: no commit {ref!r} in this repository")
        subject = capture(["git", "log", "-1", "--format=%s", commit])
    name = "eventbus" + (f"@{commit}" if commit else "") + (f"+redis{nodes}" if redis else "")
    if settings:
        name += "[" + ",".join(f"{k}={_setting_text(v)}" for k, v in settings) + "]"
    return Variant(name, ref, commit, subject or "", nodes, redis, settings)


def file_stem(name: str) -> str:
    """A server's name as part of a file name: eventbus@2b95013[metrics=false] ->
    eventbus@2b95013-metrics-false (no brackets for the shell to glob)."""
    return re.sub(r"[^\w@+.-]+", "-", name).strip("-")


def server_info(server: str) -> tuple[str, str, list[str]]:
    """(label, generator flavor, workloads) of a server or an eventbus variant."""
    if server in SERVERS:
        return SERVERS[server]
    variant = VARIANTS[server]
    return variant.label, "eventbus", variant.workloads

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
# server_us_per_op apart: user (the server's own code) and system (its kernel work).
CPU_PARTS = ["server_user_us_per_op", "server_system_us_per_op"]
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


def capture(cmd: list[str], cwd: Path = ROOT, env: dict[str, str] | None = None) -> str:
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=60,
                              check=False, env=env).stdout.strip()
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


# --- eventbus at another commit, and Redis ------------------------------------------------


def server_tree(commit: str | None) -> Path:
    """Where an eventbus server runs from: the working tree, or (for ``commit``) a copy
    of the ``eventbus`` package at that commit with the benchmark app beside it (the
    same directories as the abuse suite's ``--server-ref``)."""
    if commit is None:
        return ROOT
    tree = LOGS / f"server-{commit}"
    if not (tree / "eventbus").is_dir():
        say(f"extracting eventbus at {commit} into {tree.relative_to(ROOT)}")
        tree.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", commit, "eventbus"], cwd=ROOT,
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    apps = tree / "benchmarks" / "apps"
    apps.mkdir(parents=True, exist_ok=True)
    # The app of the working tree, so that every variant serves the same app.
    shutil.copy(HERE / "apps" / "eventbus_app.py", apps / "eventbus_app.py")
    return tree


def server_env(tree: Path, settings: tuple[tuple[str, Any], ...] = ()) -> dict[str, str]:
    """The environment of a server that must import ``eventbus`` from ``tree``: first
    on PYTHONPATH, and the server runs in ``tree`` (``python -m`` puts the current
    directory first on sys.path; the project's editable install comes last), with the
    variant's ``settings`` for the app's bus in SETTINGS_ENV."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop(SETTINGS_ENV, None)
    if settings:
        env[SETTINGS_ENV] = json.dumps(dict(settings))
    if tree != ROOT:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tree), env.get("PYTHONPATH")]))
    return env


_SETTINGS_SNIPPET = """
import json, sys
from benchmarks.apps.eventbus_app import bus
print(json.dumps({name: getattr(bus.config, name, "(no such setting)")
                  for name in sys.argv[1:]}))
"""


def check_variant(python: str, variant: Variant) -> None:
    """Exit unless the variant's interpreter imports eventbus from its tree and (for
    Redis) its ``eventbus serve`` has --redis."""
    tree = server_tree(variant.commit)
    env = server_env(tree)
    where = capture([python, "-c", "import eventbus; print(eventbus.__file__)"], tree, env)
    if not where.startswith(str(tree / "eventbus")):
        sys.exit(f"bench: {variant.name}: eventbus imports from {where or '(nothing)'}, "
                 f"not from {tree}")
    if variant.redis and "--redis" not in capture(
            [python, "-m", "eventbus", "serve", "--help"], tree, env):
        sys.exit(f"bench: {variant.name}: eventbus serve at "
                 f"{variant.commit or 'the working tree'} has no --redis")
    if variant.settings:
        # The app's bus, loaded as the server will load it, has the settings asked for.
        wanted = dict(variant.settings)
        proc = subprocess.run([python, "-c", _SETTINGS_SNIPPET, *wanted], cwd=tree,
                              env=server_env(tree, variant.settings), capture_output=True,
                              text=True, timeout=60, check=False)
        try:
            got = json.loads(proc.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            sys.exit(f"bench: {variant.name}: the app does not load with these settings at "
                     f"{variant.commit or 'the working tree'}: {proc.stderr.strip()[-800:]}")
        if got != wanted:
            sys.exit(f"bench: {variant.name}: the app's bus has {got}, not {wanted}")


class RedisServer:
    """A redis-server of our own for the runs that need one: 127.0.0.1, a free port,
    no persistence; started once, stopped at the end."""

    def __init__(self, prefix: list[str], log: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            sys.exit("bench: the +redis variants need redis-server (apt-get install "
                     "redis-server)")
        self.port = free_port()
        self.log = log
        self._log_file = log.open("wb")
        self.proc = subprocess.Popen(
            [*prefix, binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--protected-mode", "yes"],
            stdout=self._log_file, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            if self.ping():
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("redis-server did not answer PING within 10 s")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def ping(self) -> bool:
        with contextlib.suppress(OSError), socket.create_connection(
                ("127.0.0.1", self.port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
        return False

    def alive(self) -> bool:
        return self.proc.poll() is None and self.ping()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log_file.close()


# --- one run ----------------------------------------------------------------------------


class Server:
    def __init__(self, name: str, cmd: list[str], cwd: Path, log: Path,
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log = log
        self._log_file = log.open("wb")
        env = env or dict(os.environ, PYTHONUNBUFFERED="1")
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
        self._redis: RedisServer | None = None
        self._runs = 0

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

    def server_cmd(self, server: str, port: int) -> tuple[list[str], Path, dict[str, str]]:
        apps = HERE / "apps"
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if server in VARIANTS:
            variant = VARIANTS[server]
            tree = server_tree(variant.commit)
            return [self.eventbus_python, "-m", "eventbus", "serve",
                    "benchmarks.apps.eventbus_app:bus", "--port", str(port),
                    "--log-level", "warning"], tree, server_env(tree, variant.settings)
        if server == "socketio-py":
            assert self.peers_python is not None
            return [str(self.peers_python), str(apps / "socketio_app.py"), "--port",
                    str(port)], ROOT, env
        if server == "socketio-node":
            return [self.node, str(apps / "socketio_server.mjs"), "--port", str(port)], HERE, \
                env
        if server == "trio-websocket":
            return [self.eventbus_python, str(apps / "trio_websocket_echo.py"), "--port",
                    str(port)], ROOT, env
        if server == "wsproto":
            return [self.eventbus_python, str(apps / "wsproto_echo.py"), "--port",
                    str(port)], ROOT, env
        raise ValueError(server)

    def redis(self) -> RedisServer:
        """Our Redis server, started on first use (and again if it died)."""
        if self._redis is not None and not self._redis.alive():
            say("  redis-server is gone: starting another")
            self._redis.stop()
            self._redis = None
        if self._redis is None:
            LOGS.mkdir(parents=True, exist_ok=True)
            self._redis = RedisServer(self.taskset(1), LOGS / "redis-server.log")
            self.prioritize(self._redis.pid)
            say(f"redis-server on 127.0.0.1:{self._redis.port} (pid {self._redis.pid})")
        return self._redis

    def close(self) -> None:
        if self._redis is not None:
            self._redis.stop()
            self._redis = None

    def run_one(self, server: str, workload: str, rep: int,
                profile: bool = False) -> dict[str, Any]:
        label, flavor, _ = server_info(server)
        variant = VARIANTS.get(server)
        nodes = variant.nodes if variant else 1
        params = dict(self.params[workload])
        if profile and self.args.profile_seconds and "duration_s" in params:
            params["duration_s"] = self.args.profile_seconds
        LOGS.mkdir(parents=True, exist_ok=True)
        record: dict[str, Any] = {
            "server": server, "label": label, "workload": workload, "rep": rep,
            "params": params, "ok": False, "nodes": nodes,
            "loadavg_before": _loadavg(),
        }
        redis: RedisServer | None = None
        prefix = None
        srvs: list[Server] = []
        ports: list[int] = []
        spies: list[subprocess.Popen[bytes]] = []
        try:
            if variant is not None and variant.redis:
                redis = self.redis()
                self._runs += 1
                prefix = f"bench{os.getpid()}-{self._runs}"
                record["redis"] = {"port": redis.port, "prefix": prefix}
            for node in range(nodes):
                port = free_port()
                cmd, cwd, env = self.server_cmd(server, port)
                if redis is not None:
                    cmd += ["--redis", redis.url, "--redis-prefix", prefix or "eventbus"]
                suffix = f"-node{node + 1}" if nodes > 1 else ""
                log = LOGS / f"{file_stem(server)}-{workload}-{rep}{suffix}.log"
                # Every node on core 0, the load generator (and Redis) on core 1.
                srv = Server(server, self.taskset(0) + cmd, cwd, log, env)
                srvs.append(srv)
                ports.append(port)
                self.prioritize(srv.pid)
            for srv, port in zip(srvs, ports, strict=True):
                srv.wait_ready(port)
            time.sleep(0.2)
            if profile:
                for node, srv in enumerate(srvs):
                    spies.append(self.start_profiler(srv.pid, self.profile_name(
                        server, workload, node, nodes)))
            timeout = params.get("deadline_s", 0) + params.get("duration_s", 0) + \
                params.get("warmup_s", 0) + MARGIN[workload]
            urls = [f"ws://127.0.0.1:{port}/" for port in ports]
            config = {
                "workload": workload, "flavor": flavor, "url": urls[0], "urls": urls,
                "serverPid": srvs[0].pid, "serverPids": [srv.pid for srv in srvs],
                "extraPids": {"redis": redis.pid} if redis is not None else {},
                "clockTicks": self.clock_ticks, "timeout": timeout, "params": params,
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
                self.dump_stacks(srvs[0].pid, self.profile_name(server, workload, 0, nodes),
                                 gen, dump_at)
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
            metrics = result["metrics"]
            cpu = result.get("cpu") or {}
            ops = metrics.get(ops_key)
            server_cpu = cpu.get("server_cpu_s")
            if ops and server_cpu is not None:
                # Contention-robust cost: the server's own CPU time per operation (with
                # several nodes: all the nodes' CPU time per operation, the bus's cost).
                metrics["server_us_per_op"] = 1e6 * server_cpu / ops
                # Apart: the server's own code (user) and the kernel's work for it (system).
                for part in ("user", "system"):
                    if cpu.get(f"server_{part}_s") is not None:
                        metrics[f"server_{part}_us_per_op"] = \
                            1e6 * cpu[f"server_{part}_s"] / ops
            redis_cpu = (cpu.get("extra_cpu_s") or {}).get("redis")
            if ops and redis_cpu is not None:
                metrics["redis_us_per_op"] = 1e6 * redis_cpu / ops
            if workload in MULTI_NODE_WORKLOADS:
                metrics["node_stats"] = _node_stats(metrics, cpu, nodes)
            alive = all(srv.proc.poll() is None for srv in srvs)
            record.update({
                "ok": bool(result["ok"]) and alive,
                "metrics": metrics, "cpu": cpu, "losses": result["losses"],
                "errors": result["errors"], "error_count": result["errorCount"],
                "server_peak_rss_kib": srvs[0].status_kib("VmHWM"),
            })
            if nodes > 1:
                record["server_peak_rss_kib_by_node"] = [srv.status_kib("VmHWM")
                                                         for srv in srvs]
            for node, srv in enumerate(srvs):
                if srv.proc.poll() is not None:
                    record["errors"].append(f"server (node {node + 1}) exited during the "
                                            f"run: {srv.log_tail()}")
        except RuntimeError as exc:
            record["errors"] = [str(exc)]
        finally:
            for spy in spies:
                self.stop_profiler(spy)
            for srv in srvs:
                srv.stop()
            if not record["ok"]:
                record["server_log_tail"] = "\n".join(srv.log_tail() for srv in srvs)
            record["loadavg_after"] = _loadavg()
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
            record["waited_s"] = round(waited, 1)
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
        found = py_spy_binary(self.peers_python, self.eventbus_python)
        assert found is not None
        return found

    @staticmethod
    def profile_name(server: str, workload: str, node: int = 0, nodes: int = 1) -> str:
        """The stem of a profile's files in benchmarks/profiles/: eventbus-W2, or
        eventbus@3fb6785-W2, eventbus@ccd0a82+redis2-W2-node1,
        eventbus@2b95013-metrics-false-W1."""
        return f"{file_stem(server)}-{workload}" + (f"-node{node + 1}" if nodes > 1 else "")

    def start_profiler(self, pid: int, name: str) -> subprocess.Popen[bytes]:
        PROFILES.mkdir(exist_ok=True)
        out = PROFILES / f"{name}.txt"
        return subprocess.Popen(
            [*self.taskset(1), self.py_spy(), "record", "--pid", str(pid), "--rate",
             str(self.args.profile_rate),
             *([] if self.args.profile_blocking else ["--nonblocking"]),
             "--format", "raw", "-o", str(out)],
            stdout=subprocess.DEVNULL, stderr=(PROFILES / f"{name}.log").open("wb"),
        )

    def dump_stacks(self, pid: int, name: str, gen: subprocess.Popen[bytes],
                    at: float) -> None:
        while time.monotonic() < at and gen.poll() is None:
            time.sleep(0.1)
        if gen.poll() is None:
            text = capture([self.py_spy(), "dump", "--pid", str(pid)])
            (PROFILES / f"{name}-dump.txt").write_text(text + "\n")

    def stop_profiler(self, spy: subprocess.Popen[bytes]) -> None:
        spy.send_signal(signal.SIGINT)
        try:
            spy.wait(20)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait()


def py_spy_binary(peers_python: Path | None, eventbus_python: str) -> str | None:
    """py-spy from the peers' venv, else beside the eventbus interpreter, else on PATH."""
    for folder in ([peers_python.parent] if peers_python else []) + \
            [Path(eventbus_python).parent]:
        if (folder / "py-spy").exists():
            return str(folder / "py-spy")
    return shutil.which("py-spy")


def _loadavg() -> list[float] | None:
    with contextlib.suppress(OSError, ValueError):
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    return None


def _node_stats(metrics: dict[str, Any], cpu: dict[str, Any], nodes: int) -> list[dict[str, Any]]:
    """Per node: CPU seconds, share of a core, deliveries to its members, CPU per
    delivery (µs). One node: the whole server."""
    by_cpu = cpu.get("server_cpu_s_by_node") or [cpu.get("server_cpu_s")]
    by_ops = metrics.get("deliveries_by_node") or [metrics.get("deliveries")]
    members = metrics.get("members_by_node") or [metrics.get("members")]
    wall = cpu.get("wall_s")
    out = []
    for node in range(nodes):
        seconds = by_cpu[node] if node < len(by_cpu) else None
        ops = by_ops[node] if node < len(by_ops) else None
        out.append({
            "node": node + 1,
            "members": members[node] if node < len(members) else None,
            "cpu_s": seconds,
            "cpu": seconds / wall if seconds is not None and wall else None,
            "deliveries": ops,
            "us_per_delivery": 1e6 * seconds / ops if seconds is not None and ops else None,
        })
    return out


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
            for name in [metric, *SECONDARY[workload], *CPU_PARTS]:
                entry[name] = stats([r["metrics"][name] for r in good
                                     if r["metrics"].get(name) is not None])
            for name in ("loadgen_cpu", "server_cpu", "foreign_cpu"):
                entry[name] = stats([r["cpu"][name] for r in good
                                     if r.get("cpu") and r["cpu"].get(name) is not None])
            entry["loadgen_saturated_runs"] = sum(
                1 for r in good if r.get("cpu") and (r["cpu"].get("loadgen_cpu") or 0) >= SATURATED)
            entry["contended_runs"] = sum(1 for r in good if r.get("contended"))
            entry["loadavg"] = stats([r["loadavg_before"][0] for r in good
                                      if r.get("loadavg_before")])
            if server in VARIANTS and workload in MULTI_NODE_WORKLOADS:
                entry["nodes"] = _node_summary(good)
                entry["redis_us_per_op"] = stats([r["metrics"]["redis_us_per_op"] for r in good
                                                  if r["metrics"].get("redis_us_per_op")
                                                  is not None])
                entry["redis_cpu"] = stats([
                    r["cpu"]["extra_cpu_s"]["redis"] / r["cpu"]["wall_s"] for r in good
                    if (r.get("cpu") or {}).get("extra_cpu_s", {}).get("redis") is not None])
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
                             "cost_ratios": cost_ratios,
                             "pairs": _pairs(runs, [s for s in servers if s in VARIANTS],
                                             workload, metric)}
    return summary


def _node_summary(good: list[dict[str, Any]]) -> list[dict[str, Any]]:
    count = max((len(r["metrics"].get("node_stats") or []) for r in good), default=0)
    out = []
    for node in range(count):
        rows = [r["metrics"]["node_stats"][node] for r in good
                if len(r["metrics"].get("node_stats") or []) > node]
        out.append({"node": node + 1, **{
            name: stats([row[name] for row in rows if row.get(name) is not None])
            for name in ("us_per_delivery", "cpu", "deliveries", "members")}})
    return out


def _pairs(runs: list[dict[str, Any]], variants: list[str], workload: str,
           metric: str) -> dict[str, Any]:
    """Ratios between eventbus variants, within each repetition: "A / B" for every B
    listed before A. ``metric`` and ``server_us_per_op`` are A's over B's; with
    ``node_us_per_op``, each of A's nodes' CPU per delivery over B's server CPU per
    delivery (A on several nodes against B on one)."""
    out: dict[str, Any] = {}
    for i, before in enumerate(variants):
        for after in variants[i + 1:]:
            found: dict[str, list[float]] = {metric: [], "server_us_per_op": [],
                                             **{name: [] for name in CPU_PARTS}}
            per_node: dict[int, list[float]] = {}
            for rep in sorted({r["rep"] for r in runs}):
                a = [r for r in runs if r["rep"] == rep and r["workload"] == workload
                     and r["server"] == after and r["ok"]]
                b = [r for r in runs if r["rep"] == rep and r["workload"] == workload
                     and r["server"] == before and r["ok"]]
                if not a or not b:
                    continue
                ma, mb = a[0]["metrics"], b[0]["metrics"]
                for name in found:
                    if ma.get(name) and mb.get(name):
                        found[name].append(ma[name] / mb[name])
                for row in ma.get("node_stats") or []:
                    if row.get("us_per_delivery") and mb.get("server_us_per_op"):
                        per_node.setdefault(row["node"], []).append(
                            row["us_per_delivery"] / mb["server_us_per_op"])
            if not found[metric] and not found["server_us_per_op"]:
                continue
            out[f"{after} / {before}"] = {
                "after": after, "before": before,
                **{name: stats(values) for name, values in found.items()},
                "node_us_per_op": [stats(per_node[node]) for node in sorted(per_node)],
            }
    return out


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
        for server, entry in data["servers"].items():
            nodes = entry.get("nodes") or []
            if len(nodes) > 1 or entry.get("redis_us_per_op"):
                parts = [f"node {n['node']} {fmt((n['us_per_delivery'] or {}).get('median'))}"
                         for n in nodes]
                redis = entry.get("redis_us_per_op")
                if redis:
                    parts.append(f"redis-server {fmt(redis['median'])}")
                print(f"  {server}: CPU us per delivery: " + ", ".join(parts))
        for name, pair in (data.get("pairs") or {}).items():
            speed, cost = pair.get(data["metric"]), pair.get("server_us_per_op")
            nodes = ", ".join(f"node {k + 1} {fmt(n['median'])}x"
                              for k, n in enumerate(pair.get("node_us_per_op") or []) if n)
            print(f"  {name}: {data['metric']} {fmt(speed and speed['median'])}x, "
                  f"server CPU per op {fmt(cost and cost['median'])}x"
                  + (f" (per node: {nodes})" if len(pair.get("node_us_per_op") or []) > 1
                     else ""))


# --- profiles ---------------------------------------------------------------------------


def summarize_profile(path: Path, top: int = 25,
                      tree: Path | None = None) -> tuple[str, dict[str, Any]]:
    """Self and total share of samples per function from py-spy's raw (collapsed) output,
    and per line of eventbus code (with that line's text, read from ``tree``, where the
    server's ``eventbus`` package was)."""
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    # Per line of eventbus code: the samples whose innermost eventbus frame is that line
    # (the line running, or calling the library code that runs).
    by_line: dict[str, int] = {}
    sources: dict[str, str] = {}
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        samples += count
        raw = [frame for frame in stack.split(";") if frame]
        frames = [_frame_name(frame) for frame in raw]
        if not frames:
            continue
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for name in set(frames):
            total[name] = total.get(name, 0) + count
        mine = [frame for frame in raw if _eventbus_frame(frame)]
        if mine:
            where = _frame_name(mine[-1], line=True)
            by_line[where] = by_line.get(where, 0) + count
            if where not in sources:
                sources[where] = _source_line(tree, mine[-1])
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
        # Every function at 0.05% or more, to compare two profiles.
        "self_all": [[round(100 * c / samples, 2), n] for n, c in
                     sorted(own.items(), key=lambda item: -item[1])
                     if 100 * c / samples >= 0.05],
        "total_all": [[round(100 * c / samples, 2), n] for n, c in
                      sorted(total.items(), key=lambda item: -item[1])
                      if 100 * c / samples >= 0.05],
        "total": [[round(100 * c / samples, 2), n] for n, c in
                  sorted(total.items(), key=lambda item: -item[1])[:top]],
        # Every line of eventbus code at 0.05% or more (innermost eventbus frame).
        "eventbus_lines": [[round(100 * c / samples, 2), n, sources.get(n, "")]
                           for n, c in sorted(by_line.items(), key=lambda item: -item[1])
                           if 100 * c / samples >= 0.05],
    }
    return "\n".join(lines) + "\n", found


def _source_line(tree: Path | None, frame: str) -> str:
    """The text of a frame's line: ``Connection.frame (eventbus/server/connection.py:366)``
    -> ``metrics.sent[...] += 1``, from the file under ``tree``."""
    where = frame.partition(" (")[2].rstrip(")")
    file, _, number = where.rpartition(":")
    if tree is None or not number.isdigit():
        return ""
    relative = "eventbus/" + file.split("eventbus/", 1)[1]
    with contextlib.suppress(OSError, IndexError):
        return (tree / relative).read_text().splitlines()[int(number) - 1].strip()
    return ""


def _eventbus_frame(frame: str) -> bool:
    """A frame of the eventbus package's own code (not the command line's: its frames
    are the outermost of every stack, under trio's scheduler)."""
    where = frame.partition(" (")[2]
    return "eventbus/" in where and "site-packages/" not in where and \
        "eventbus/cli.py" not in where and "eventbus/__main__.py" not in where


def _frame_name(frame: str, line: bool = False) -> str:
    # "function (path/to/file.py:123)" -> "function (file.py)", or "(file.py:123)"
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    file, _, number = where.rpartition(":")
    if not file:
        file, number = where, ""
    if line and number:
        return f"{_frame_name(frame)[:-1]}:{number})"
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


def split_servers(text: str) -> list[str]:
    """``--servers`` at its commas, except those inside a variant's [settings]."""
    items, depth, current = [], 0, ""
    for char in text:
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth <= 0:
            items.append(current)
            current = ""
        else:
            current += char
    return [item.strip() for item in [*items, current] if item.strip()]


def parse_servers(text: str) -> list[str]:
    """Server names, and eventbus variants (eventbus@REF, eventbus+redisN,
    eventbus[NAME=VALUE,...]), which are registered in VARIANTS under their canonical
    names."""
    out = []
    for item in split_servers(text):
        name = ALIASES.get(item, item)
        if name in SERVERS:
            out.append(name)
            continue
        variant = parse_variant(name)
        if variant is None:
            sys.exit(f"bench: unknown server {item!r}; choose from {', '.join(SERVERS)}, "
                     "or eventbus@REF, eventbus+redisN, eventbus@REF+redisN, "
                     "eventbus[NAME=VALUE,...] (any of them with settings)")
        VARIANTS[variant.name] = variant
        out.append(variant.name)
    if len(set(out)) != len(out):
        sys.exit(f"bench: a server is listed twice: {', '.join(out)}")
    return out


def insert_sections(peers_python: Path | None, results: Path, report: Path) -> None:
    """Write the sections of ``report`` made from a variants run (report.py --sections:
    no plot, standard library only)."""
    python = str(peers_python) if peers_python else sys.executable
    subprocess.run([python, str(HERE / "report.py"), "--sections", str(results), str(report)],
                   check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes, one repetition, eventbus only unless --servers")
    parser.add_argument("--servers", help="comma-separated: " + ", ".join(SERVERS)
                        + "; eventbus@REF (another commit's eventbus package), "
                        "eventbus+redisN (N nodes through a Redis server of the runner's), "
                        "eventbus@REF+redisN; any of these with settings of the app's bus, "
                        "e.g. eventbus@HEAD[metrics=false] (ServerConfig fields; "
                        "eventbus-nometrics is eventbus[metrics=false])")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated")
    parser.add_argument("--scaleout", action="store_true",
                        help="the scale-out and no-regression figures: W2 at --before and at "
                        "HEAD (in-memory adapter), and at HEAD on Redis with 1 and 2 nodes; "
                        "writes benchmarks/results/scaleout.json and its sections of "
                        "docs/benchmarks.md (--quick: quick-scaleout.json, no report)")
    parser.add_argument("--metrics-cost", action="store_true",
                        help="the cost of counting: W1 and W2 at HEAD with metrics off "
                        "(eventbus@HEAD[metrics=false]) and on, and at --before; writes "
                        f"benchmarks/results/{METRICS_RESULTS} and its section of "
                        "docs/benchmarks.md (--quick: quick-metrics.json, no report)")
    parser.add_argument("--before",
                        help=f"with --scaleout: the commit to compare HEAD with (default "
                        f"{SCALEOUT_BEFORE}, the commit before the adapter seam); with "
                        f"--metrics-cost: the reference without metrics (default "
                        f"{METRICS_BEFORE}, the commit before them; none: no reference)")
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
                        "(e.g. W1,W2): each eventbus server or variant in --servers, every "
                        "node; output in benchmarks/profiles/")
    parser.add_argument("--profile-rate", type=int, default=200,
                        help="py-spy samples per second (default %(default)s)")
    parser.add_argument("--profile-blocking", action="store_true",
                        help="py-spy pauses the server for each sample (exact stacks, a "
                        "slower server; default: --nonblocking, some stacks torn)")
    parser.add_argument("--profile-seconds", type=float,
                        help="measured seconds of W1 in a profiled run (default the "
                        "workload's, 10), for more samples")
    args = parser.parse_args()

    if args.scaleout and args.metrics_cost:
        sys.exit("bench: --scaleout or --metrics-cost, not both")
    if args.scaleout:
        if args.servers:
            sys.exit("bench: --scaleout picks its own servers; drop --servers")
        args.servers = (f"eventbus@{args.before or SCALEOUT_BEFORE},eventbus@HEAD,"
                        "eventbus@HEAD+redis1,eventbus@HEAD+redis2")
        args.workloads = "W2"
    if args.metrics_cost:
        if args.servers:
            sys.exit("bench: --metrics-cost picks its own servers; drop --servers")
        before = args.before or METRICS_BEFORE
        # Off before on: the pairs are later / earlier, so "on / off" is the cost.
        args.servers = ("" if before.lower() == "none" else f"eventbus@{before},") + \
            "eventbus@HEAD[metrics=false],eventbus@HEAD"
        args.workloads = ",".join(METRICS_WORKLOADS)
    default_servers = "eventbus" if args.quick else ",".join(SERVERS)
    servers = parse_servers(args.servers or default_servers)
    workloads = parse_list(args.workloads, WORKLOADS, {}, "workload")
    profile = parse_list(args.profile, WORKLOADS, {}, "workload")
    reps = args.reps if args.reps is not None else (1 if args.quick else 3)
    if args.retries is None:
        args.retries = 0 if args.quick else 2
    if args.quiet_wait is None:
        args.quiet_wait = 0.0 if args.quick else 60.0
    everything = set(servers) == set(SERVERS) and set(workloads) == set(WORKLOADS)
    variants_run = any(s in VARIANTS and s != "eventbus" for s in servers)
    preset = args.scaleout or args.metrics_cost
    report = None if args.no_report else (
        args.report or (ROOT / "docs" / "benchmarks.md"
                        if (everything or preset) and not args.quick else None))
    if preset:
        name = SCALEOUT_RESULTS if args.scaleout else METRICS_RESULTS
        out = args.out or RESULTS / (f"quick-{name}" if args.quick else name)
    else:
        out = args.out or RESULTS / ("quick.json" if args.quick else "latest.json")

    if not Path(args.eventbus_python).exists():
        dev = ROOT / "dev.py"
        say(f"{args.eventbus_python} is missing: setting up the project venv with dev.py")
        subprocess.run([sys.executable, str(dev), "lint"], cwd=ROOT, check=False,
                       stdout=subprocess.DEVNULL)
        if not Path(args.eventbus_python).exists():
            sys.exit(f"bench: no eventbus interpreter at {args.eventbus_python}")
    for server in servers:
        if server in VARIANTS and server != "eventbus":
            check_variant(args.eventbus_python, VARIANTS[server])
    node = ensure_node()
    # The full report draws a plot (matplotlib); the sections of a variants run do not.
    full_report = report is not None and not variants_run
    needs_spy = bool(profile) and py_spy_binary(None, args.eventbus_python) is None
    needs_peers = bool(set(servers) & PEER_PYTHON_SERVERS) or full_report or needs_spy
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
        "quiet_wait": args.quiet_wait, "retries": args.retries,
        "labels": {name: server_info(name)[0] for name in servers},
        "git": capture(["git", "describe", "--always", "--dirty"]),
        # Uncommitted changes to the server code measured (the working tree is measured).
        "eventbus_changes": capture(["git", "status", "--porcelain", "--", "eventbus"]),
        "versions": {
            "eventbus server": python_versions(args.eventbus_python, [
                "eventbus", "trio", "wsproto", "h11", "trio-websocket", "msgpack", "attrs",
                "cattrs", "coredis"]),
            "node": node_versions(node),
        },
        "uptime": [capture(["uptime"])],
    }
    if args.scaleout:
        meta["scaleout"] = {"before": servers[0], "after": servers[1],
                            "redis": servers[2:], "command": " ".join(sys.argv[1:])}
    if args.metrics_cost:
        meta["metrics_cost"] = {"before": servers[0] if len(servers) > 2 else None,
                                "off": servers[-2], "on": servers[-1],
                                "command": " ".join(sys.argv[1:])}
    if any(s in VARIANTS for s in servers):
        meta["variants"] = {
            name: {"ref": v.ref, "commit": v.commit, "subject": v.subject, "nodes": v.nodes,
                   "adapter": "redis" if v.redis else "memory", "label": v.label,
                   "settings": dict(v.settings)}
            for name, v in VARIANTS.items() if name in servers}
        meta["cores"] = {"nodes": 0, "load generator": 1, "redis-server": 1}
        if any(VARIANTS[s].redis for s in servers if s in VARIANTS):
            meta["versions"]["redis"] = {"redis-server": capture(
                ["redis-server", "--version"]).split(" v=")[-1].split()[0]}
    if peers_python is not None:
        meta["versions"]["python peers"] = python_versions(peers_python, [
            "python-socketio", "python-engineio", "aiohttp", "uvloop", "matplotlib", "py-spy"])

    runs: list[dict[str, Any]] = []
    begun = time.monotonic()
    try:
        for rep in range(1, reps + 1):
            shift = (rep - 1) % len(servers)
            order = servers[shift:] + servers[:shift]
            for workload in workloads:
                for server in order:
                    if workload not in server_info(server)[2]:
                        continue
                    say(f"rep {rep}/{reps} {workload} {server} ...")
                    record = runner.run_contention_aware(server, workload, rep)
                    runs.append(record)
                    metric = PRIMARY[workload][0]
                    if record["ok"]:
                        cpu = record.get("cpu") or {}
                        per_node = ""
                        if len(record["metrics"].get("node_stats") or []) > 1:
                            per_node = " per node us/delivery=" + "/".join(
                                fmt(n["us_per_delivery"])
                                for n in record["metrics"]["node_stats"])
                        say(f"  {metric}={fmt(record['metrics'].get(metric))} loadgen cpu="
                            f"{fmt(cpu.get('loadgen_cpu'))} server cpu="
                            f"{fmt(cpu.get('server_cpu'))} server us/op="
                            f"{fmt(record['metrics'].get('server_us_per_op'))}{per_node}"
                            f" other={fmt(cpu.get('foreign_cpu'))}")
                    else:
                        say(f"  FAILED: {'; '.join(record.get('errors') or [])[:1500]}")
                meta["uptime"].append(capture(["uptime"]))
        meta["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        meta["elapsed_s"] = round(time.monotonic() - begun, 1)

        summary = summarize(runs, servers, workloads)
        result = {"meta": meta, "runs": runs, "summary": summary}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1) + "\n")
        print_table(summary)
        print(f"\nresults: {out} ({meta['elapsed_s']} s)")

        profiles: dict[str, Any] = {}
        targets = [s for s in servers if s in VARIANTS] or ["eventbus"]
        for workload in profile:
            for server in targets:
                if workload not in server_info(server)[2]:
                    continue
                say(f"profiling {server} in {workload} with py-spy")
                record = runner.run_one(server, workload, 0, profile=True)
                nodes = record.get("nodes", 1)
                node_stats = (record.get("metrics") or {}).get("node_stats") or []
                for k in range(nodes):
                    stem = Runner.profile_name(server, workload, k, nodes)
                    raw = PROFILES / f"{stem}.txt"
                    if not raw.exists():
                        say(f"no profile for {stem} (see {PROFILES / f'{stem}.log'})")
                        continue
                    text, top = summarize_profile(raw, tree=server_tree(
                        VARIANTS[server].commit if server in VARIANTS else None))
                    top["run_ok"] = record["ok"]
                    us = node_stats[k]["us_per_delivery"] if k < len(node_stats) else \
                        (record.get("metrics") or {}).get("server_us_per_op")
                    top["server_us_per_op"] = us
                    key = workload if server == "eventbus" else f"{workload} {server}" + (
                        f" node {k + 1}" if nodes > 1 else "")
                    profiles[key] = top
                    (PROFILES / f"{stem}-top.txt").write_text(text)
                    print(f"\n{text}")
                say(f"  profiled run ok={record['ok']}")
        if profiles:
            meta["profiles"] = profiles
            meta["profiling"] = {"rate": args.profile_rate, "blocking": args.profile_blocking,
                                 "W1_seconds": args.profile_seconds}
            out.write_text(json.dumps(result, indent=1) + "\n")
    finally:
        runner.close()

    if report is not None:
        if variants_run:
            insert_sections(peers_python, out, report)
        else:
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
