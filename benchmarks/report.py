"""Render a results file of benchmarks/run.py as markdown with a plot.

    python benchmarks/report.py benchmarks/results/latest.json docs/benchmarks.md

Writes the markdown file and a PNG beside it (same name, .png). Needs matplotlib
(benchmarks/requirements.txt; run.py calls this with benchmarks/.venv-peers).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

ORDER = ["eventbus", "socketio-py", "socketio-node", "trio-websocket", "wsproto"]
SHORT = {
    "eventbus": "eventbus",
    "socketio-py": "python-socketio",
    "socketio-node": "Node socket.io",
    "trio-websocket": "raw trio-websocket",
    "wsproto": "raw wsproto",
}
COLORS = {
    "eventbus": "#d95f02",
    "socketio-py": "#1b9e77",
    "socketio-node": "#7570b3",
    "trio-websocket": "#a6a6a6",
    "wsproto": "#666666",
}
TITLES = {
    "W1": "W1 ack round trips, 50 conns",
    "W2": "W2 room fan-out, 500 members",
    "W3": "W3 idle connections, 5,000",
    "W4": "W4 binary 16 KiB through a room, 50 conns",
    "W5": "W5 fan-out, mixed JSON/msgpack",
}
SERVER_BOUND = 0.80  # server CPU share of its core from which the server is the limit
UNITS = {
    "acks_per_s": "acks/s",
    "deliveries_per_s": "deliveries/s",
    "bytes_per_conn": "bytes per connection",
    "mb_per_s": "MB/s delivered",
}


def fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.{digits - 1}f}"


def spread(stat: dict[str, float] | None, scale: float = 1.0) -> str:
    if not stat:
        return "failed"
    return (f"**{fmt(stat['median'] * scale)}** "
            f"({fmt(stat['min'] * scale)}-{fmt(stat['max'] * scale)})")


def titles_for(meta: dict[str, Any]) -> dict[str, str]:
    params = meta["params"]
    out = dict(TITLES)
    if "W1" in params:
        out["W1"] = f"W1 ack round trips, {params['W1']['conns']} conns"
    if "W2" in params:
        out["W2"] = f"W2 room fan-out, {params['W2']['members']} members"
    if "W3" in params:
        out["W3"] = f"W3 idle connections, {params['W3']['conns']:,}"
    if "W4" in params:
        out["W4"] = (f"W4 binary {params['W4']['size'] // 1024} KiB through a room, "
                     f"{params['W4']['conns']} conns")
    if "W5" in params:
        out["W5"] = f"W5 fan-out, {params['W5']['members']} members, JSON+msgpack"
    return out


# --- the plot -------------------------------------------------------------------------


def plot(results: dict[str, Any], path: Path) -> None:
    meta = results["meta"]
    summary = results["summary"]
    titles = titles_for(meta)
    panels: list[tuple[str, str]] = []
    for workload in ("W1", "W2", "W3", "W4", "W5"):
        if workload in summary:
            panels.append((workload, summary[workload]["metric"]))
            if workload == "W1":
                panels.append(("W1", "latency"))
    cols = 3
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(15, 4.6 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, (workload, metric) in zip(axes.flat, panels, strict=False):
        data = summary[workload]["servers"]
        servers = [s for s in ORDER if s in data]
        if metric == "latency":
            _latency_panel(ax, data, servers)
            continue
        scale = 1 / 1024 if metric == "bytes_per_conn" else 1.0
        unit = "KiB per connection (lower is better)" if metric == "bytes_per_conn" \
            else UNITS[metric]
        medians, lows, highs, colors, labels = [], [], [], [], []
        for server in servers:
            stat = data[server][metric]
            labels.append(SHORT[server].replace(" ", "\n", 1))
            colors.append(COLORS[server])
            if stat is None:
                medians.append(0)
                lows.append(0)
                highs.append(0)
                continue
            medians.append(stat["median"] * scale)
            lows.append((stat["median"] - stat["min"]) * scale)
            highs.append((stat["max"] - stat["median"]) * scale)
        x = range(len(servers))
        bars = ax.bar(x, medians, color=colors, yerr=[lows, highs], capsize=4,
                      edgecolor="black", linewidth=0.5)
        for bar, server, value, high in zip(bars, servers, medians, highs, strict=True):
            text = "FAILED" if data[server][metric] is None else fmt(value)
            ax.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height() + high),
                        xytext=(0, 3), textcoords="offset points", ha="center",
                        va="bottom", fontsize=8)
        ax.set_xticks(list(x), labels, fontsize=8)
        ax.set_ylabel(unit)
        ratio = summary[workload]["ratios"].get("socketio-py")
        target = meta["targets"].get(workload)
        base = data.get("socketio-py", {}).get(metric)
        title = titles[workload]
        if ratio:
            title += f"\neventbus = {fmt(ratio['median'])}x python-socketio"
        if target and base:
            level = base["median"] * target * scale
            ax.axhline(level, color=COLORS["eventbus"], linestyle="--", linewidth=1)
            ax.annotate(f"target for eventbus: {'≤' if workload == 'W3' else '≥'} {target}x "
                        "python-socketio", (-0.45, level), xytext=(0, 2),
                        textcoords="offset points", ha="left", va="bottom", fontsize=7,
                        color=COLORS["eventbus"],
                        bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5,
                              "alpha": 0.8})
            title += f" (target {'≤' if workload == 'W3' else '≥'} {target}x)"
        ax.set_title(title, fontsize=10)
        ax.margins(y=0.15)
        ax.grid(axis="y", alpha=0.3)
    reps = meta["reps"]
    fig.suptitle(f"eventbus vs. peers: median of {reps} runs each, whiskers min-max "
                 f"(server on 1 core, load generator on the other)", fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _latency_panel(ax: Any, data: dict[str, Any], servers: list[str]) -> None:
    width = 0.38
    for offset, metric, hatch in ((-width / 2, "p50_ms", ""), (width / 2, "p99_ms", "//")):
        values = [(data[s][metric] or {}).get("median", 0) for s in servers]
        ax.bar([i + offset for i in range(len(servers))], values, width,
               color=[COLORS[s] for s in servers], hatch=hatch, edgecolor="black",
               linewidth=0.5, label=metric.replace("_ms", ""))
        for i, value in enumerate(values):
            ax.annotate(fmt(value), (i + offset, value), xytext=(0, 2),
                        textcoords="offset points", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(servers)), [SHORT[s].replace(" ", "\n", 1) for s in servers],
                  fontsize=8)
    ax.set_ylabel("ms (lower is better)")
    ax.set_title("W1 ack latency: p50 (plain) and p99 (hatched)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.margins(y=0.15)


# --- the markdown ----------------------------------------------------------------------


def markdown(results: dict[str, Any], png_name: str) -> str:
    meta = results["meta"]
    summary = results["summary"]
    runs = results["runs"]
    params = meta["params"]
    titles = titles_for(meta)
    machine = meta["machine"]
    out: list[str] = []
    add = out.append
    add("# Benchmarks\n")
    add("eventbus against python-socketio and Node socket.io, and against two raw trio "
        "WebSocket echo servers that show what trio's transports cost with no event layer "
        "at all. Generated by `benchmarks/run.py` (see "
        "[How to run](#how-to-run)); the numbers below are from the run of "
        f"{meta['started']} (`{meta['git']}`), which took "
        f"{max(1, round(meta['elapsed_s'] / 60))} min.\n")
    changes = meta.get("eventbus_changes")
    if changes is not None:
        add("The eventbus server measured is the working tree at that commit"
            + (", with uncommitted changes to: "
               + ", ".join(f"`{line[3:]}`" for line in changes.splitlines()) + "."
               if changes else ", with no uncommitted changes to `eventbus/`.") + "\n")
    add(f"![benchmark results]({png_name})\n")

    add("## Summary\n")
    add(f"Medians of {meta['reps']} repetitions (min-max in brackets). A ratio is "
        "eventbus's number divided by the peer's, computed within each repetition, then "
        "the median (min-max) of those. For W3 the ratio is of memory per connection, "
        "so lower is better.\n")
    add("The last column compares cost rather than speed: python-socketio's server CPU "
        "time per operation divided by eventbus's (above 1: eventbus is cheaper). It "
        "depends less on what else ran on the machine than the wall-clock numbers.\n")
    add("| Workload | Metric | eventbus | python-socketio | Node socket.io | "
        "eventbus / python-socketio | target | eventbus / Node socket.io | "
        "CPU per op, python-socketio / eventbus |")
    add("|---|---|---|---|---|---|---|---|---|")
    for workload, data in summary.items():
        metric = data["metric"]
        servers = data["servers"]
        scale = 1 / 1024 if metric == "bytes_per_conn" else 1.0
        unit = "KiB/conn" if metric == "bytes_per_conn" else UNITS[metric]
        cells = [spread(servers[s][metric], scale) if s in servers else "-"
                 for s in ("eventbus", "socketio-py", "socketio-node")]
        py = data["ratios"].get("socketio-py")
        node = data["ratios"].get("socketio-node")
        cost = (data.get("cost_ratios") or {}).get("socketio-py")
        target = meta["targets"].get(workload)
        met = ""
        if py and target:
            good = py["median"] <= target if workload == "W3" else py["median"] >= target
            met = " ✅" if good else " ❌"
        sign = "≤" if workload == "W3" else "≥"
        add(f"| {titles[workload]} | {unit} | {' | '.join(cells)} | "
            f"{spread(py) + 'x' if py else '-'} | {sign} {target}x{met} | "
            f"{spread(node) + 'x' if node else '-'} | "
            f"{spread(cost) + 'x' if cost else '-'} |")
    add("")

    add("## All results\n")
    for workload, data in summary.items():
        metric = data["metric"]
        scale = 1 / 1024 if metric == "bytes_per_conn" else 1.0
        unit = "KiB per connection" if metric == "bytes_per_conn" else UNITS[metric]
        add(f"### {titles[workload]}\n")
        add(_workload_text(workload, params[workload]))
        extra = _secondary(workload)
        add(f"| Server | {unit} | " + " | ".join(label for _, label, _ in extra)
            + " | load generator CPU | server CPU | runs |")
        add("|---|---|" + "---|" * len(extra) + "---|---|---|")
        for server in [s for s in ORDER if s in data["servers"]]:
            entry = data["servers"][server]
            cols = [spread(entry[metric], scale)]
            for name, _, factor in extra:
                cols.append(spread(entry.get(name), factor) if entry.get(name) else "-")
            cpu = entry.get("loadgen_cpu")
            scpu = entry.get("server_cpu")
            sat = " ⚠ saturated" if entry["loadgen_saturated_runs"] else ""
            notes = []
            if entry["failed"]:
                notes.append(f"{entry['failed']} failed")
            if entry.get("contended_runs"):
                notes.append(f"{entry['contended_runs']} contended")
            runs_text = f"{entry['runs'] - entry['failed']}/{entry['runs']} ok" + (
                f" ({', '.join(notes)})" if notes else "")
            add(f"| {SHORT[server]} | " + " | ".join(cols)
                + f" | {_pct(cpu)}{sat} | {_pct(scpu)} | {runs_text} |")
        ratios = data["ratios"]
        if ratios:
            parts = [f"{spread(r)}x {SHORT[p]}" for p, r in ratios.items()]
            add(f"\neventbus = {'; '.join(parts)}.")
            costs = data.get("cost_ratios") or {}
            if costs:
                parts = [f"{SHORT[p]} {spread(r)}x" for p, r in costs.items()]
                add(f"Server CPU per operation, peer / eventbus (above 1: eventbus is "
                    f"cheaper): {'; '.join(parts)}.\n")
            else:
                add("")
        else:
            add("")

    add("## Is the load generator the limit?\n")
    add(_saturation_text(meta, summary))

    failed = [r for r in runs if not r["ok"]]
    if failed:
        add("## Failed runs\n")
        add("A run with a loss or an error is a failed run and gives no number:\n")
        for r in failed:
            errors = "; ".join((r.get("errors") or [])[:3])
            add(f"- {r['workload']} {SHORT[r['server']]}, repetition {r['rep']}: "
                f"losses {r.get('losses')}; {errors}")
        add("")

    profiles = meta.get("profiles") or {}
    if profiles:
        add("## Where eventbus spends its time\n")
        add("py-spy (`--nonblocking`, 200 Hz) attached to the eventbus server during an "
            "extra run of each workload (`run.py --profile`; these runs are not in the "
            "numbers above). Share of samples with the function on top of the stack "
            "(self):\n")
        for workload, top in profiles.items():
            add(f"**{workload}** ({top['samples']:,} samples)\n")
            add("| self % | function |")
            add("|---:|---|")
            for pct, name in top["self"][:12]:
                add(f"| {pct:.1f} | `{name}` |")
            add("")

    # What the numbers do not say by themselves (a missed target: why, and what
    # was tried) is written by people, in a file kept beside the runner.
    analysis = Path(__file__).with_name("ANALYSIS.md")
    if analysis.is_file():
        add(analysis.read_text().rstrip() + "\n")

    add("## Method\n")
    add(_method_text(meta))
    add("## Setup\n")
    add(f"- Machine: {machine['cpu_model']}, {machine['cpus']} cores, "
        f"{machine['memory_gib']} GiB, Linux {machine['kernel']}.")
    add(f"- Each run starts its server fresh, pinned to core 0 (`taskset -c 0`); the load "
        f"generator is pinned to core 1. Pinned: {'yes' if meta['pinned'] else 'NO'}. "
        f"Open file limit: {meta['fd_limit']}.")
    add("- Traffic goes to 127.0.0.1 only, plain `ws://`, no compression.\n")
    add("Versions:\n")
    add("| Stack | Component | Version |")
    add("|---|---|---|")
    for stack, versions in meta["versions"].items():
        for name, version in versions.items():
            add(f"| {stack} | {name} | {version} |")
    add("")
    add("## How to run\n")
    add(_how_to_run())
    return "\n".join(out) + "\n"


def _secondary(workload: str) -> list[tuple[str, str, float]]:
    return {
        "W1": [("p50_ms", "p50 ms", 1.0), ("p99_ms", "p99 ms", 1.0),
               ("server_us_per_op", "server CPU µs per ack", 1.0)],
        "W2": [("seconds_to_last_delivery", "s until the last member has all", 1.0),
               ("server_us_per_op", "server CPU µs per delivery", 1.0)],
        "W3": [("open_s", "s to open all", 1.0),
               ("server_us_per_op", "server CPU µs per connection opened", 1.0)],
        "W4": [("seconds_to_last_delivery", "s until the last delivery", 1.0),
               ("server_us_per_op", "server CPU µs per delivery", 1.0)],
        "W5": [("seconds_to_last_delivery", "s until the last member has all", 1.0),
               ("server_us_per_op", "server CPU µs per delivery", 1.0)],
    }[workload]


def _pct(stat: dict[str, float] | None) -> str:
    if not stat:
        return "-"
    return f"{100 * stat['median']:.0f}%"


def _workload_text(workload: str, p: dict[str, Any]) -> str:
    if workload == "W1":
        timing = (f"{p.get('warmup_s', 0)} s warm-up, then {p['duration_s']} s measured"
                  if p.get("duration_s") else f"{p.get('acks')} acks in all")
        return (f"{p['conns']} connections, each in a closed loop: emit `echo` with a "
                "~100-byte JSON payload and an ack, wait for the ack (checked: same data), "
                f"emit the next. {timing}; latency is emit to ack. The raw "
                "echo servers get the very same text frame and send it back (the echo is "
                "the ack); they have no event layer, so they bound what any trio server "
                "can do here.\n")
    if workload in ("W2", "W5"):
        codecs = ("Half the members (every other one) use msgpack, half JSON; the "
                  "publisher JSON. The peers have one codec, so they run all-JSON: for "
                  "them W5 is W2 again (run again, so that each repetition has its own "
                  "ratio). "
                  if workload == "W5" else "All JSON. ")
        return (f"{p['members']} members in one room and one more member that publishes "
                f"{p['messages']:,} messages of ~100 bytes (broadcast-except-sender), "
                f"pipelined with a window of up to {p['window']} unacked publishes so "
                "that the server, not the round trip, is the limit. "
                f"{p['members'] * p['messages']:,} deliveries; the time runs from the first "
                "publish to the moment the last member has all of them. " + codecs
                + "Every member checks count, order and duplicates; the publisher must get "
                "none of its own.\n")
    if workload == "W3":
        return (f"{p['conns']:,} connections opened ({p['concurrency']} handshakes in flight "
                "at a time), each fully open and welcomed (eventbus: WELCOME received; "
                "Socket.IO: `40{sid}` received). Server memory is `VmRSS` from "
                "`/proc/<pid>/status`, read before (after 10 warm-up connections opened and "
                f"closed) and {p['settle_s']} s after the last connection opened; growth / "
                "connections.\n")
    if workload == "W4":
        total = p["conns"] * p["messages"] * (p["conns"] - 1)
        return (f"{p['conns']} connections in one room; each publishes {p['messages']} "
                f"binary payloads of {p['size'] // 1024} KiB (window {p['window']} unacked "
                f"per connection), each delivered to the {p['conns'] - 1} others: "
                f"{total:,} deliveries, {total * p['size'] / 1e6:,.0f} MB. eventbus "
                "clients use msgpack (bin values); Socket.IO clients send the same object "
                "with a Buffer, which Socket.IO carries as a binary attachment (a text "
                "frame plus a binary frame). MB/s counts payload bytes delivered.\n")
    return ""


def _saturation_text(meta: dict[str, Any], summary: dict[str, Any]) -> str:
    threshold = meta["saturation_threshold"]
    lines = [
        "The load generator is one Node process (`ws`) on its own core; its CPU time "
        "(user+system) and the server's are measured over the timed part of each run. "
        f"A load generator at ≥ {100 * threshold:.0f}% of its core is saturated: "
        "the number it measured is then a lower bound for the server. A server at "
        f"≥ {100 * SERVER_BOUND:.0f}% of its core is the limit (the rest of that core "
        "goes mostly to kernel work for the loopback traffic, which is charged to no "
        "process).\n",
    ]
    generator: list[str] = []
    both: list[str] = []
    server_bound: list[str] = []
    neither: list[str] = []
    for workload, data in summary.items():
        for server, entry in data["servers"].items():
            cpu = entry.get("loadgen_cpu")
            scpu = entry.get("server_cpu")
            if not cpu:
                continue
            text = f"{workload} {SHORT[server]} ({_pct(cpu)} / {_pct(scpu)})"
            server_busy = bool(scpu and scpu["median"] >= SERVER_BOUND)
            if entry["loadgen_saturated_runs"]:
                runs = entry["runs"] - entry["failed"]
                text += (f", generator saturated in {entry['loadgen_saturated_runs']} of "
                         f"{runs} runs")
                (both if server_busy else generator).append(text)
            elif server_busy:
                server_bound.append(text)
            else:
                neither.append(text)
    lines.append("Load generator / server CPU, medians:\n")
    if generator:
        lines.append("- **Load generator saturated, server not at its limit**: the "
                     "number is a lower bound for the server: " + "; ".join(generator) + ".")
    else:
        lines.append("- The load generator never held back a server that had CPU to spare.")
    if both:
        lines.append("- **Both at their limit**: the server used its whole core, so the "
                     "number is the server's; but the generator has no headroom left, and a "
                     "faster server will need a faster generator (or a second core for "
                     "it): " + "; ".join(both) + ". (A generator that keeps up reads fewer "
                     "frames per system call, so its CPU use grows to fill its core before "
                     "it actually falls behind.)")
    if server_bound:
        lines.append("- **Server-bound** (the generator had room to spare): "
                     + "; ".join(server_bound) + ".")
    if neither:
        lines.append("- Neither at its limit: " + "; ".join(neither) + ". These are "
                     "bound by round trips and handshakes (in W1 each connection has one "
                     "request in flight; W3 is mostly handshakes).")
    return "\n".join(lines) + "\n"


def _method_text(meta: dict[str, Any]) -> str:
    return (
        "- **Servers.** Each serves the same app: an `echo` event acked with its data; "
        "`join` (acked) and `publish` to a room, broadcast to the room except the sender "
        "and acked. eventbus: `benchmarks/apps/eventbus_app.py`, served with `python -m "
        "eventbus serve benchmarks.apps.eventbus_app:bus`, with **rate limiting disabled "
        "(`rate=0`)**, `max_pending=256` and outbound queues large enough that no member "
        "is disconnected as a slow consumer (the peers queue without a bound); its "
        "built-in JOIN and PUBLISH packets are the room operations. python-socketio: "
        "`AsyncServer` on aiohttp with uvloop (`sio.enter_room`, `emit(..., room=, "
        "skip_sid=)`), `benchmarks/apps/socketio_app.py`. Node socket.io v4: "
        "`socket.join`, `socket.to(room).emit`, `benchmarks/apps/socketio_server.mjs`. "
        "Raw echo servers (W1 only): trio-websocket (`benchmarks/apps/trio_websocket_echo"
        ".py`) and wsproto on trio sockets (`benchmarks/apps/wsproto_echo.py`).\n"
        "- **One load generator** for all, `benchmarks/loadgen/loadgen.mjs`: Node with "
        "`ws` (and bufferutil), the same client code for every server; only the framing "
        "differs: eventbus v1 JSON/msgpack packets, or Socket.IO v5 over Engine.IO v4 "
        "on a plain WebSocket (`?EIO=4&transport=websocket`; open packet, `40`, events "
        "`42[...]`, acks `42<id>[...]`/`43<id>[...]`, binary attachments `45<n>-`, ping "
        "`2` answered `3`), implemented in the generator itself.\n"
        "- **Verification.** Every ack is matched by id and its data checked; every "
        "delivery is checked per receiver and sender for count, order and duplicates, "
        "its payload checked, and the sender must not receive its own message. A run "
        "with any loss or error is a failed run: it gives no number, and "
        "`run.py` exits non-zero.\n"
        "- **Repetitions.** Every (workload, server) pair runs "
        f"{meta['reps']} times on a fresh server; the server order rotates between "
        "repetitions. Ratios to the peers are computed within each repetition.\n"
        "- **A shared machine.** Before each run the runner waits (up to 60 s; 5 s once "
        "a wait has run out) until other processes leave the machine idle, and it "
        "measures, from /proc/stat, the CPU that processes other than the server and the "
        "load generator took during the run (kernel loopback work partly shows there "
        f"too). A run where that exceeded {meta.get('contended_threshold', 0.25)} cores "
        "is repeated (up to twice, unless the machine is busy anyway) and marked "
        "*contended* if it stays so. "
        + (f"This run used `--nice {meta['nice']}`: the servers and the load generator "
           f"ran at nice {meta['nice']}, and so did their sessions' autogroups (Linux "
           "shares CPU time between sessions first), so other work on the machine took "
           "little of their cores. " if meta.get("nice") else "")
        + "The server CPU time per operation is the number least affected by other "
        "work.\n"
        "- **Time limits.** Each run has a hard timeout (its deadline plus a margin); the "
        "full suite takes about 15 minutes.\n"
    )


def _how_to_run() -> str:
    return (
        "```sh\n"
        "python3 benchmarks/run.py            # everything (about 15 min); writes this page\n"
        "python3 benchmarks/run.py --quick    # seconds, tiny sizes, eventbus only\n"
        "python3 benchmarks/run.py --servers eventbus,socketio-py --workloads W1,W2 --reps 5\n"
        "python3 benchmarks/run.py --workloads W1,W2 --reps 1 --profile W1,W2   # + py-spy\n"
        "```\n\n"
        "Needs Python 3.11+, Node 18+ with npm, `taskset`, and the registries (first run "
        "only): `run.py` runs `npm ci` in `benchmarks/` (ws, bufferutil, @msgpack/msgpack, "
        "socket.io) and creates `benchmarks/.venv-peers` from `benchmarks/requirements.txt` "
        "(python-socketio, aiohttp, uvloop, matplotlib, py-spy). The eventbus server and "
        "the raw trio echo servers run from the project's `.venv` (`python3 dev.py` makes "
        "it; `--eventbus-python` picks another interpreter), i.e. they measure the working "
        "tree. Servers: `eventbus`, `socketio-py`, `socketio-node`, `trio-websocket`, "
        "`wsproto`. Results go to `benchmarks/results/latest.json`; a full run (every "
        "server and workload) also rewrites this page and its plot (`--report PATH` to "
        "write it elsewhere, `--no-report` for none). `tests/test_benchmarks_quick.py` "
        "runs the quick mode in the test suite.\n"
    )


def main() -> None:
    results_path = Path(sys.argv[1])
    report_path = Path(sys.argv[2])
    results = json.loads(results_path.read_text())
    png = report_path.with_suffix(".png")
    report_path.parent.mkdir(parents=True, exist_ok=True)
    plot(results, png)
    report_path.write_text(markdown(results, png.name))


if __name__ == "__main__":
    main()
