"""Run each flood against a fresh server and judge it against the goals.

One scenario, in order: start the server (``eventbus serve
benchmarks.apps.abuse_app:bus``, pinned to core 0, its log to a file), connect the
bystander (its own process), measure the bystander alone for the idle phase, start
the abusive client (its own process, niced), sample the server's memory every 20 ms
and probe with new clients once a second until the flood ends, measure a short tail,
then stop everything. A server that passes the memory or log cap is killed at once:
the scenario then has its figures up to that moment, and fails.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from . import bystander, floods

HERE = Path(__file__).resolve().parent.parent
ROOT = HERE.parent
RESULTS = HERE / "results"
LOGS = RESULTS / "tmp"
APP = "benchmarks.apps.abuse_app:bus"

# --- the goals ----------------------------------------------------------------------

#: The bystander's p99 during a flood must stay under this ...
P99_LIMIT_MS = 50.0
#: ... and within this factor of its idle p99.
P99_IDLE_FACTOR = 5.0
#: Names under which the server's per-connection memory bound may appear among its
#: settings (``ServerConfig``); the first one found is the bound. ``--memory-bound``
#: overrides it.
MEMORY_BOUND_SETTINGS = (
    "max_connection_memory", "connection_memory", "max_memory_per_connection",
    "memory_per_connection", "connection_memory_limit", "max_connection_bytes",
    "max_buffered_bytes", "max_inbox_bytes", "max_receive_bytes",
)
#: Without such a setting, the bound is derived from the per-connection buffer
#: limits (``inbox_bytes + send_queue_bytes + 2 * max_frame``) when the server has
#: them all, else this placeholder, which no one documented (before ``inbox_bytes``,
#: the outbound queue's ``send_queue_bytes``, 8 MiB, was the only byte limit).
MEMORY_BOUND_FALLBACK = 16 * 1024 * 1024
#: A new client must get its welcome and one echo answer within this many seconds
#: (fd-exhaustion).
NEWCOMER_DEADLINE_S = 2.0
#: Not a goal of the team's, a warning: server log written per second of flood.
LOG_WARN_BYTES_PER_S = 64 * 1024

# --- the method -----------------------------------------------------------------------

BYSTANDER_RATE = 50.0  # echo requests per second (the default rate limit is 100)
SAMPLE_S = 0.02
NEWCOMER_FIRST_S = 0.5  # after the flood starts
NEWCOMER_EVERY_S = 1.0
#: The descriptor limit of the server in fd-exhaustion, and the --max-connections it
#: gets when the CLI has that flag.
FD_LIMIT = 256
MAX_CONNECTIONS = FD_LIMIT // 2
RSS_CAP = 3 * 1024**3
#: The machine counts as quiet below this many busy cores (it may be shared).
QUIET = 0.15
LOG_CAP = 1024**3
# Seconds of each phase: the bystander's warm-up (not measured), its idle phase,
# the flood, and the tail after it.
FULL = {"warmup_s": 0.5, "idle_s": 3.0, "flood_s": 10.0, "tail_s": 1.0}
QUICK = {"warmup_s": 0.2, "idle_s": 0.5, "flood_s": 1.0, "tail_s": 0.1}

SCENARIOS: dict[str, str] = {
    "json-empty-arrays": "JSON EMIT of 900 KB of empty arrays to a handler that sleeps 1 s",
    "msgpack-binary": "msgpack EMIT of 900 KB of binary data to a handler that sleeps 1 s",
    "msgpack-empty-arrays": "msgpack EMIT of 900 KB of 0x90 (empty arrays), same handler",
    "one-byte-frames": "a 900 KB JSON message in 1-byte frames, over and over",
    "empty-continuations": "one unfinished message, then 0-byte continuation frames",
    "ping-flood": "pings as fast as they go (the pongs are read)",
    "error-reports": "client ERROR reports [8,null,...] of 64 KiB of fake log lines",
    "fd-exhaustion": f"{floods.SILENT_SOCKETS} silent TCP connections; server limited to "
                     f"{FD_LIMIT} descriptors",
}


def say(message: str) -> None:
    print(f"abuse: {message}", file=sys.stderr, flush=True)


# --- the server -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def capture(cmd: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT) -> str:
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=60,
                              check=False, env=env).stdout.strip()
    except OSError:
        return ""


_SETTINGS_SNIPPET = """
import json, attrs
from benchmarks.apps.abuse_app import bus
print(json.dumps(attrs.asdict(bus.config), default=str))
"""


def server_tree(ref: str | None) -> Path:
    """The directory the server runs from: the working tree, or (for ``ref``) a copy
    of the ``eventbus`` package at that commit, with the abuse app beside it."""
    if ref is None:
        return ROOT
    commit = capture(["git", "rev-parse", "--short", ref])
    if not commit:
        raise SystemExit(f"abuse: no commit {ref!r}")
    tree = LOGS / f"server-{commit}"
    if not (tree / "eventbus").is_dir():
        tree.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", commit, "eventbus"], cwd=ROOT,
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    apps = tree / "benchmarks" / "apps"
    apps.mkdir(parents=True, exist_ok=True)
    shutil.copy(HERE / "apps" / "abuse_app.py", apps / "abuse_app.py")
    return tree


def server_env(env: dict[str, str], tree: Path) -> dict[str, str]:
    """``env`` for a server that must import ``eventbus`` from ``tree``."""
    if tree == ROOT:
        return env
    return dict(env, PYTHONPATH=os.pathsep.join(filter(None, [str(tree),
                                                              env.get("PYTHONPATH")])))


def server_settings(python: str, env: dict[str, str], tree: Path = ROOT) -> dict[str, Any]:
    """The abuse app's ServerConfig, as the server would load it."""
    text = capture([python, "-c", _SETTINGS_SNIPPET], env, tree)
    try:
        found: dict[str, Any] = json.loads(text.splitlines()[-1])
    except (ValueError, IndexError):
        return {}
    return found


def memory_bound(settings: dict[str, Any], override: int | None) -> tuple[int, str]:
    """The per-connection memory bound and where it came from."""
    if override is not None:
        return override, "--memory-bound"
    for name in MEMORY_BOUND_SETTINGS:
        if isinstance(settings.get(name), int) and settings[name] > 0:
            return settings[name], f"server setting {name}"
    for name, value in settings.items():
        if "memory" in name and isinstance(value, int) and value > 0:
            return value, f"server setting {name}"
    parts = ("inbox_bytes", "send_queue_bytes", "max_frame")
    if all(isinstance(settings.get(name), int) for name in parts):
        # No single setting yet, but the buffers a connection may fill are bounded:
        # its inbound queue, its outbound queue, and a message being reassembled
        # (counted twice: wsproto's buffer and the reassembled copy).
        derived = settings["inbox_bytes"] + settings["send_queue_bytes"] + 2 * settings["max_frame"]
        return derived, "derived: inbox_bytes + send_queue_bytes + 2 x max_frame"
    return MEMORY_BOUND_FALLBACK, "MEMORY_BOUND_FALLBACK (the server has no such setting)"


class Server:
    def __init__(self, cmd: list[str], log: Path, env: dict[str, str],
                 fd_limit: int | None, cwd: Path) -> None:
        self.log = log
        self._log_file = log.open("wb")

        def limit() -> None:
            if fd_limit is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (fd_limit, fd_limit))

        self.proc = subprocess.Popen(cmd, cwd=cwd, stdout=self._log_file,
                                     stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True, preexec_fn=limit)
        self.killed: str | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, port: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}: "
                                   f"{self.log.read_text(errors='replace')[-2000:]}")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"the server did not listen on port {port} within {timeout} s")

    def status_kib(self, field: str) -> int | None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        return None

    def cpu_s(self) -> float | None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return None

    def log_size(self) -> int:
        try:
            return self.log.stat().st_size
        except OSError:
            return 0

    def kill(self, why: str) -> None:
        self.killed = why
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def stop(self) -> None:
        # Everything is measured by now, and a graceful shutdown would first drain
        # what the flood left in the kernel's buffers: kill it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self._log_file.close()


def scan_log(path: Path, start: int) -> dict[str, int]:
    """Count lines, tracebacks, EMFILE errors and forged lines written after ``start``."""
    counts = {"lines": 0, "tracebacks": 0, "emfile": 0, "forged_lines": 0}
    needles = {"tracebacks": b"Traceback (most recent call last)",
               "emfile": b"Too many open files",
               "forged_lines": b"\n" + floods.FORGED_LINE.encode()}
    carry = b""

    def count(block: bytes) -> None:
        counts["lines"] += block.count(b"\n")
        text = b"\n" + block  # so that every line of the block follows a newline
        for name, needle in needles.items():
            counts[name] += text.count(needle)

    with contextlib.suppress(OSError), path.open("rb") as file:
        file.seek(start)
        while chunk := file.read(8 << 20):
            data = carry + chunk
            cut = data.rfind(b"\n") + 1  # whole lines only; the rest waits
            count(data[:cut])
            carry = data[cut:]
    if carry:
        count(carry + b"\n")
    return counts


# --- one scenario ---------------------------------------------------------------------


class Scenario:
    def __init__(self, name: str, args: argparse.Namespace, serve_flags: set[str],
                 env: dict[str, str], settings: dict[str, Any], tree: Path = ROOT) -> None:
        self.name = name
        self.tree = tree
        self.args = args
        self.serve_flags = serve_flags
        self.env = env
        if (name == "fd-exhaustion" and "--max-connections" not in serve_flags
                and "max_connections" in settings):
            # A setting without a flag: give it to the app (unless set by --setting).
            overrides = json.loads(env.get("EVENTBUS_ABUSE_SETTINGS") or "{}")
            overrides.setdefault("max_connections", MAX_CONNECTIONS)
            self.env = dict(env, EVENTBUS_ABUSE_SETTINGS=json.dumps(overrides))
        self.pin = (os.cpu_count() or 1) >= 2 and not args.no_pin
        self.rss_samples: list[tuple[float, int]] = []
        self.newcomers: list[dict[str, Any]] = []

    def taskset(self, core: int) -> list[str]:
        return ["taskset", "-c", str(core)] if self.pin else []

    def server_cmd(self, port: int) -> list[str]:
        cmd = [*self.niced(), *self.taskset(0), self.args.eventbus_python, "-m", "eventbus",
               "serve", APP, "--port", str(port)]
        if self.name == "fd-exhaustion" and "--max-connections" in self.serve_flags:
            cmd += ["--max-connections", str(MAX_CONNECTIONS)]
        return cmd

    def niced(self, extra: int = 0) -> list[str]:
        """The prefix that runs a process at ``--nice`` (plus ``extra``)."""
        level = min(19, self.args.nice + extra)
        return ["nice", "-n", str(level)] if level else []

    def prioritize(self, pid: int, extra: int = 0) -> None:
        """Give the process's session (autogroup) the same nice level: with
        autogrouping, CPU time is first shared between sessions, so a nice level
        alone does not compete with other sessions' processes."""
        level = min(19, self.args.nice + extra)
        if level:
            with contextlib.suppress(OSError):
                Path(f"/proc/{pid}/autogroup").write_text(str(level))

    def helper(self, role: str, *argv: object, nice: int = 0) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [*self.niced(nice), *self.taskset(1), sys.executable, str(HERE / "abuse.py"),
             role, *map(str, argv)],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            start_new_session=True)
        self.prioritize(proc.pid, nice)
        return proc

    def run(self) -> dict[str, Any]:
        phases = QUICK if self.args.quick else FULL
        waited, load = wait_quiet(self.args.quiet_wait)
        if load > QUIET:
            say(f"  the machine is busy ({load:.2f} cores after {waited:.0f} s); running anyway")
        flood_s = self.args.seconds if self.args.seconds is not None else phases["flood_s"]
        port = free_port()
        logs = self.args.logs
        logs.mkdir(parents=True, exist_ok=True)
        log = logs / f"abuse-{self.name}.log"
        fd_limit = FD_LIMIT if self.name == "fd-exhaustion" else None
        cmd = self.server_cmd(port)
        record: dict[str, Any] = {"scenario": self.name, "title": SCENARIOS[self.name],
                                  "server_cmd": cmd[cmd.index("-m"):], "fd_limit": fd_limit,
                                  "flood_s": flood_s, "load_before": load}
        server = Server(cmd, log, server_env(self.env, self.tree), fd_limit, self.tree)
        self.prioritize(server.pid)
        helpers: list[subprocess.Popen[str]] = []
        try:
            server.wait_ready(port)
            watcher = self.helper("_bystander", port, BYSTANDER_RATE,
                                  time.monotonic() + 60 + flood_s)
            helpers.append(watcher)
            assert watcher.stdout is not None
            assert watcher.stdin is not None
            ready = watcher.stdout.readline()
            record["welcome_options"] = json.loads(ready.partition(" ")[2] or "{}")
            time.sleep(phases["warmup_s"])
            idle_start = time.monotonic()
            busy = machine_busy()
            time.sleep(phases["idle_s"])
            record["machine_busy_idle"] = machine_busy(busy)
            idle_end = time.monotonic()
            record["idle_rss_kib"] = server.status_kib("VmRSS")
            log_start = server.log_size()
            cpu_start = server.cpu_s()
            abuser = self.helper("_abuser", self.name, port, flood_s, nice=10)
            helpers.append(abuser)
            assert abuser.stdout is not None
            abuser.stdout.readline()  # "started"
            busy = machine_busy()
            self.watch(server, abuser, time.monotonic() + flood_s + 10, port)
            record["machine_busy_flood"] = machine_busy(busy)
            flood = json.loads(abuser.stdout.readline() or "{}")
            abuser.wait(5)
            if not flood:
                raise RuntimeError("the abusive client failed (its traceback is above)")
            cpu_end = server.cpu_s()
            time.sleep(phases["tail_s"])
            watcher.stdin.write("stop\n")
            watcher.stdin.flush()
            seen = json.loads(watcher.stdout.readline() or "{}")
            watcher.wait(10)
            flood_start = flood.get("started", idle_end)
            flood_end = flood.get("ended", time.monotonic())
            if "connected_at" in flood:  # as seconds since the flood began
                flood["connected_at"] = [round(at - flood_start, 3)
                                         for at in flood["connected_at"]]
            record.update({
                "abuser": flood,
                "flood_elapsed_s": flood_end - flood_start,
                "idle": window(seen, idle_start, idle_end),
                "flood": window(seen, flood_start, flood_end),
                "bystander_closed": seen.get("closed"),
                "bystander_failures": seen.get("failures", {}),
                "peak_rss_kib": max([server.status_kib("VmHWM") or 0,
                                     *(rss for _, rss in self.rss_samples)]),
                "rss_timeline": thin(self.rss_samples, flood_start),
                "server_cpu_share": None if cpu_start is None or cpu_end is None else
                round((cpu_end - cpu_start) / max(1e-9, flood_end - flood_start), 3),
                "server_alive": server.proc.poll() is None,
                "server_killed": server.killed,
                "log_bytes": server.log_size() - log_start,
                "log": scan_log(log, log_start),
                "newcomers": self.newcomers,
            })
            if self.args.samples:
                record["bystander_samples"] = [
                    [round(at - flood_start, 4), rtt and round(rtt, 3)]
                    for at, rtt in zip(seen["sent_at"], seen["rtt_ms"], strict=True)]
        except (RuntimeError, OSError, ValueError, subprocess.TimeoutExpired) as exc:
            record["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            for proc in helpers:
                if proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(5)
            server.stop()
            record["server_log_tail"] = tail(log)
        return record

    def watch(self, server: Server, abuser: subprocess.Popen[str], hard_end: float,
              port: int) -> None:
        """Sample the server until the abuser is done; kill what runs away."""
        stop = threading.Event()
        prober = threading.Thread(target=self.probe, args=(port, stop), daemon=True)
        prober.start()
        log_start = server.log_size()
        try:
            while abuser.poll() is None:
                now = time.monotonic()
                rss = server.status_kib("VmRSS")
                if rss is not None:
                    self.rss_samples.append((now, rss))
                if server.killed is None:
                    if rss is not None and rss * 1024 > self.args.rss_cap:
                        server.kill(f"RSS {rss // 1024} MiB passed the cap "
                                    f"({self.args.rss_cap // 1024**2} MiB)")
                    elif server.log_size() - log_start > LOG_CAP:
                        server.kill(f"log passed the cap ({LOG_CAP // 1024**2} MiB)")
                    elif server.proc.poll() is not None:
                        server.killed = f"exited by itself ({server.proc.returncode})"
                    if server.killed:
                        say(f"  {self.name}: {server.killed}; server stopped")
                if now > hard_end:
                    os.killpg(abuser.pid, signal.SIGKILL)
                    break
                time.sleep(SAMPLE_S)
        finally:
            stop.set()
            prober.join(NEWCOMER_DEADLINE_S + 1)

    def probe(self, port: int, stop: threading.Event) -> None:
        next_at = time.monotonic() + NEWCOMER_FIRST_S
        while not stop.wait(max(0.0, next_at - time.monotonic())):
            at = time.monotonic()
            next_at = at + NEWCOMER_EVERY_S
            ok, seconds, why = bystander.newcomer(port, NEWCOMER_DEADLINE_S)
            self.newcomers.append({"at": at, "ok": ok, "s": round(seconds, 4), "why": why})


def machine_busy(since: tuple[int, int] | None = None) -> Any:
    """Without ``since``: a reading of /proc/stat. With one: the cores' worth of CPU
    the whole machine (this suite included) used since that reading."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    except (OSError, ValueError):
        return None if since else (0, 0)
    now = (sum(fields) - fields[3] - fields[4], sum(fields))
    if since is None:
        return now
    total = max(1, now[1] - since[1])
    return round((os.cpu_count() or 1) * (now[0] - since[0]) / total, 2)


def wait_quiet(limit: float) -> tuple[float, float]:
    """Wait (at most ``limit`` seconds) for other processes to leave the CPU idle.

    Returns:
        The seconds waited and the load (cores busy) seen last.
    """
    started = time.monotonic()
    while True:
        reading = machine_busy()
        time.sleep(0.5)
        load = machine_busy(reading)
        if load <= QUIET or time.monotonic() - started >= limit:
            return time.monotonic() - started, load


def window(seen: dict[str, Any], start: float, end: float) -> dict[str, Any]:
    """Round-trip statistics of the bystander's requests due in [start, end]; a
    failed request counts as an infinitely long one."""
    rtts = [rtt for at, rtt in zip(seen.get("sent_at", []), seen.get("rtt_ms", []),
                                   strict=True) if start <= at <= end]
    good = sorted(r for r in rtts if r is not None)
    failed = len(rtts) - len(good)
    ranked = good + [math.inf] * failed

    def pct(p: float) -> float | None:
        if not ranked:
            return None
        value = ranked[min(len(ranked) - 1, math.ceil(p * len(ranked)) - 1)]
        return None if math.isinf(value) else round(value, 3)

    return {"requests": len(rtts), "failed": failed, "p50_ms": pct(0.50),
            "p99_ms": pct(0.99), "max_ms": round(good[-1], 3) if good else None}


def thin(samples: list[tuple[float, int]], start: float, every: float = 0.5) -> list[Any]:
    """The RSS samples at most every ``every`` seconds, as [s since flood, MiB]."""
    out: list[Any] = []
    last = -math.inf
    for at, rss in samples:
        if at - last >= every:
            out.append([round(at - start, 2), round(rss / 1024, 1)])
            last = at
    return out


def tail(path: Path, lines: int = 8, limit: int = 4000) -> str:
    with contextlib.suppress(OSError), path.open("rb") as file:
        file.seek(0, os.SEEK_END)
        file.seek(max(0, file.tell() - limit))
        return "\n".join(file.read().decode(errors="replace").splitlines()[-lines:])[-limit:]
    return ""
