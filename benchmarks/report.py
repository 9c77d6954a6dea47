"""Render a results file of benchmarks/run.py as markdown with a plot.

    python benchmarks/report.py benchmarks/results/latest.json docs/benchmarks.md
    python benchmarks/report.py --sections benchmarks/results/scaleout.json docs/benchmarks.md
    python benchmarks/report.py --sections benchmarks/results/metrics.json docs/benchmarks.md

Writes the markdown file and a PNG beside it (same name, .png). Needs matplotlib
(benchmarks/requirements.txt; run.py calls this with benchmarks/.venv-peers).

``--sections`` writes only the sections made from a variants run into an existing
page, between their markers, and draws nothing (standard library only): from a
``run.py --scaleout`` run the two sections "Scale-out: fan-out across nodes" and "No
regression: W2 before and after the adapter seam"; from a ``run.py --metrics-cost``
run the section "Metrics: the cost of counting". A full report includes those
sections too, from benchmarks/results/scaleout.json and metrics.json, when they exist.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any

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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    if SCALEOUT_JSON.is_file():
        add(SCALEOUT_POINTER + "\n")
    if METRICS_JSON.is_file():
        add(METRICS_POINTER + "\n")
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
            add(f"- {r['workload']} {SHORT.get(r['server'], r['server'])}, repetition {r['rep']}: "
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

    # The scale-out and before/after figures come from a run of their own.
    if SCALEOUT_JSON.is_file():
        with contextlib.suppress(ValueError, KeyError):
            add(sections_markdown(json.loads(SCALEOUT_JSON.read_text()),
                                  further_runs(SCALEOUT_JSON)))
    if METRICS_JSON.is_file():
        with contextlib.suppress(ValueError, KeyError):
            add(metrics_markdown(json.loads(METRICS_JSON.read_text())))

    # Recovery's figures (chaos.py, instructions.py) and the clients' (client_rtt.py)
    # do not come from this runner: their sections are kept by hand beside it.
    for name in ("RECOVERY.md", "CLIENTS.md"):
        kept = Path(__file__).with_name(name)
        if kept.is_file():
            add(kept.read_text().rstrip() + "\n")

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
            text = f"{workload} {SHORT.get(server, server)} ({_pct(cpu)} / {_pct(scpu)})"
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
        "python3 benchmarks/run.py --scaleout --nice -10 --profile W2   # the scale-out sections\n"
        "python3 benchmarks/run.py --metrics-cost --nice -10 --reps 5 --profile W1,W2 "
        "--profile-seconds 30 --profile-rate 500 --profile-blocking   # the metrics section\n"
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
    if sys.argv[1] == "--sections":
        results = json.loads(Path(sys.argv[2]).read_text())
        report_path = Path(sys.argv[3])
        doc = report_path.read_text() if report_path.exists() else ""
        if results["meta"].get("metrics_cost"):
            report_path.write_text(insert_metrics_section(doc, metrics_markdown(results)))
        else:
            report_path.write_text(insert_sections(doc, sections_markdown(
                results, further_runs(Path(sys.argv[2])))))
        return
    results_path = Path(sys.argv[1])
    report_path = Path(sys.argv[2])
    results = json.loads(results_path.read_text())
    png = report_path.with_suffix(".png")
    report_path.parent.mkdir(parents=True, exist_ok=True)
    plot(results, png)
    report_path.write_text(markdown(results, png.name))


# --- the sections of a variants run (run.py --scaleout) ---------------------------------

SECTIONS_BEGIN = ("<!-- scaleout:begin: written by `benchmarks/run.py --scaleout` from "
                  "benchmarks/results/scaleout.json; edit benchmarks/report.py or "
                  "benchmarks/SCALEOUT.md instead -->")
SECTIONS_END = "<!-- scaleout:end -->"
SCALEOUT_JSON = Path(__file__).with_name("results") / "scaleout.json"
LATEST_JSON = Path(__file__).with_name("results") / "latest.json"
W2_CPU_TARGET_US = 5.5  # the target for W2, in-memory adapter
SCALEOUT_POINTER = (
    "Fan-out across two nodes through Redis, and W2 before and after the adapter seam, "
    "come from a run of their own (`run.py --scaleout`): "
    "[Scale-out](#scale-out-fan-out-across-nodes) and "
    "[No regression](#no-regression-w2-before-and-after-the-adapter-seam), below.")


def _med(stat: dict[str, float] | None, scale: float = 1.0) -> str:
    return fmt(stat["median"] * scale) if stat else "-"


def _roles(meta: dict[str, Any]) -> tuple[str | None, str | None, list[str]]:
    """(before, after, the Redis variants) of a variants run."""
    roles = meta.get("scaleout")
    if roles:
        return roles["before"], roles["after"], list(roles["redis"])
    variants = meta.get("variants") or {}
    memory = [s for s in meta["servers"] if variants.get(s, {}).get("adapter") == "memory"]
    redis = [s for s in meta["servers"] if variants.get(s, {}).get("adapter") == "redis"]
    before = memory[0] if len(memory) > 1 else None
    after = memory[-1] if memory else None
    return before, after, redis


def _commit_text(meta: dict[str, Any], server: str) -> str:
    v = (meta.get("variants") or {}).get(server) or {}
    if not v.get("commit"):
        return "the working tree"
    ref = f" ({v['ref']})" if v.get("ref") and v["ref"] != v["commit"] else ""
    return f"`{v['commit']}`{ref}"


def _ratio(stat: dict[str, float] | None) -> str:
    return spread(stat) + "x" if stat else "-"


def _command(meta: dict[str, Any]) -> str:
    """The run.py command line of a --scaleout run like this one."""
    parts = ["python3 benchmarks/run.py", "--scaleout"]
    before = (meta.get("scaleout") or {}).get("before", "")
    commit = ((meta.get("variants") or {}).get(before) or {}).get("ref")
    if commit and commit != "3fb6785":
        parts.append(f"--before {commit}")
    if meta.get("quick"):
        parts.append("--quick")
    if meta.get("reps") != (1 if meta.get("quick") else 3):
        parts.append(f"--reps {meta['reps']}")
    if meta.get("nice"):
        parts.append(f"--nice {meta['nice']}")
    profiled = sorted({key.split()[0] for key in meta.get("profiles") or {}})
    if profiled:
        parts.append("--profile " + ",".join(profiled))
    return " ".join(parts)


def _pair(summary: dict[str, Any], after: str, before: str) -> dict[str, Any] | None:
    pair: dict[str, Any] | None = (summary.get("pairs") or {}).get(f"{after} / {before}")
    return pair


def _noise_text(meta: dict[str, Any], runs: list[dict[str, Any]],
                cost: str = "CPU time per delivery",
                noisy: str = "The deliveries/s columns are") -> str:
    good = [r for r in runs if r.get("ok")]
    foreign = sorted(r["cpu"]["foreign_cpu"] for r in good
                     if (r.get("cpu") or {}).get("foreign_cpu") is not None)
    loads = sorted(r["loadavg_before"][0] for r in runs if r.get("loadavg_before"))
    contended = sum(1 for r in good if r.get("contended"))
    attempts = sum(r.get("attempt", 1) for r in runs)
    lines = [
        f"Run of {meta['started']}, {meta['reps']} repetition"
        f"{'s' if meta['reps'] != 1 else ''} of every configuration in a rotating order "
        f"(each repetition starts one further along), "
        f"{max(1, round(meta['elapsed_s'] / 60))} min. Each server ran from its commit's "
        "`eventbus` package, extracted with `git archive` (not from the working tree): "
        + "; ".join(f"`{v['commit']}` {v['subject']}" for v in {
            v["commit"]: v for v in (meta.get("variants") or {}).values()
            if v.get("commit")}.values())
        + f". The machine ({meta['machine']['cpus']} cores, "
        f"{meta['machine']['cpu_model']}) was shared with other engineers' test runs "
        "throughout:",
        "",
    ]
    waits = sorted(r["waited_s"] for r in runs if r.get("waited_s") is not None)
    if loads:
        lines.append(f"- load average (1 min) before each run: {loads[0]:.2f} to "
                     f"{loads[-1]:.2f} (median {loads[len(loads) // 2]:.2f}), on "
                     f"{meta['machine']['cpus']} cores; it counts our own processes too "
                     "(a server and the load generator keep about 2 busy during a run, and "
                     "the 1-minute average decays slowly), so it overstates other work;")
    if waits:
        lines.append(f"- the wait for a quiet machine before each run: {waits[0]:.0f} to "
                     f"{waits[-1]:.0f} s;")
    if foreign:
        repeated = attempts - len(runs)
        lines.append(f"- CPU that other processes took during the timed part of a run (from "
                     f"`/proc/stat`, what is left after ours): {foreign[0]:.2f} to "
                     f"{foreign[-1]:.2f} cores (median {foreign[len(foreign) // 2]:.2f}); "
                     + (f"{contended} of {len(good)} runs stayed *contended* (over "
                        f"{meta['contended_threshold']} cores)" if contended else
                        f"no run ended *contended* (over {meta['contended_threshold']} "
                        "cores)")
                     + (f", after {repeated} run{'s' if repeated != 1 else ''} repeated for "
                        "it;" if repeated else ", and none was repeated;"))
    lines.append("- `uptime` at the start, after each repetition and at the end: "
                 + "; ".join(f"`{u.split('load average:')[-1].strip()}`"
                             for u in meta.get("uptime") or [] if u) + ".")
    nice = meta.get("nice")
    lines.append("")
    lines.append(
        "Against that: before each run the runner waited (up to "
        f"{meta.get('quiet_wait', 60):.0f} s, then 5 s once a wait had run out) for "
        "the machine to go quiet"
        + ("; every process of ours (servers, load generator"
           + (", redis-server" if any(v.get("adapter") == "redis" for v in
                                      (meta.get("variants") or {}).values()) else "")
           + f") ran at nice {nice}, their sessions' autogroups too" if nice else "")
        + f"; and the figures compared are {cost} from each process's own "
        "`/proc/<pid>/stat` (utime+stime), which other work changes far less than it "
        f"changes wall-clock throughput. {noisy} the noisy ones.\n")
    return "\n".join(lines)


def further_runs(results_path: Path) -> list[dict[str, Any]]:
    """More runs of a --scaleout run's before/after pair: the results files
    ``scaleout-*.json`` beside it (e.g. ``run.py --servers eventbus@3fb6785,eventbus@<HEAD>
    --workloads W2 --reps 5 --out benchmarks/results/scaleout-confirm.json``) that ran
    both of its in-memory variants; the others are left out."""
    out = []
    for path in sorted(results_path.parent.glob("scaleout-*.json")):
        with contextlib.suppress(OSError, ValueError):
            out.append(json.loads(path.read_text()) | {"path": path.name})
    return out


def _cost_pairs(results: dict[str, Any], before: str, after: str) -> tuple[
        list[float], list[float], list[float]]:
    """Per repetition of W2: (before's, after's) server CPU per delivery, and their ratio."""
    b_costs, a_costs, ratios = [], [], []
    for rep in sorted({r["rep"] for r in results["runs"]}):
        mine = {r["server"]: r["metrics"].get("server_us_per_op") for r in results["runs"]
                if r["rep"] == rep and r["workload"] == "W2" and r["ok"]}
        if mine.get(before):
            b_costs.append(mine[before])
        if mine.get(after):
            a_costs.append(mine[after])
        if mine.get(before) and mine.get(after):
            ratios.append(mine[after] / mine[before])
    return b_costs, a_costs, ratios


def _stat(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    ordered = sorted(values)
    middle = len(ordered) // 2
    median = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
    return {"median": median, "min": ordered[0], "max": ordered[-1], "n": len(ordered)}


def _further_text(results: dict[str, Any], more: list[dict[str, Any]], before: str,
                  after: str) -> str:
    matching = [m for m in more if before in m["meta"]["servers"]
                and after in m["meta"]["servers"]]
    if not matching:
        return ""
    b_all, a_all, r_all = _cost_pairs(results, before, after)
    lines = ["Further runs of the same pair (W2, same settings; files "
             "`benchmarks/results/scaleout-*.json`), and all runs pooled. The last two "
             "columns say how busy the machine was: the 1-minute load average before "
             "each run (ours included) and the CPU other processes took during it:\n",
             "| run | repetitions | before µs per delivery | after µs per delivery | "
             "after / before | load average | other processes, cores |",
             "|---|---|---|---|---|---|---|",
             f"| {results['meta']['started']} (above) | {results['meta']['reps']} | "
             f"{spread(_stat(b_all))} | {spread(_stat(a_all))} | {_ratio(_stat(r_all))} | "
             f"{_busy(results, before, after)} |"]
    commands = []
    for m in matching:
        b, a, r = _cost_pairs(m, before, after)
        b_all += b
        a_all += a
        r_all += r
        lines.append(f"| {m['meta']['started']} (`{m['path']}`) | {m['meta']['reps']} | "
                     f"{spread(_stat(b))} | {spread(_stat(a))} | {_ratio(_stat(r))} | "
                     f"{_busy(m, before, after)} |")
        commands.append(f"python3 benchmarks/run.py --servers {','.join(m['meta']['servers'])} "
                        f"--workloads {','.join(m['meta']['workloads'])} --reps "
                        f"{m['meta']['reps']}" + (f" --nice {m['meta']['nice']}"
                                                  if m["meta"].get("nice") else "")
                        + f" --out benchmarks/results/{m['path']} --no-report")
    lines.append(f"| **all** | {len(r_all)} | {spread(_stat(b_all))} | "
                 f"{spread(_stat(a_all))} | {_ratio(_stat(r_all))} | | |")
    lines += ["", "The further runs were made with:", "", "```sh", *commands, "```"]
    return "\n".join(lines) + "\n"


def _busy(results: dict[str, Any], before: str, after: str) -> str:
    mine = [r for r in results["runs"] if r["server"] in (before, after) and r["ok"]]
    loads = _stat([r["loadavg_before"][0] for r in mine if r.get("loadavg_before")])
    other = _stat([r["cpu"]["foreign_cpu"] for r in mine
                   if (r.get("cpu") or {}).get("foreign_cpu") is not None])
    load_text = f"{loads['min']:.2f}-{loads['max']:.2f}" if loads else "-"
    other_text = f"{other['median']:.2f} (max {other['max']:.2f})" if other else "-"
    return f"{load_text} | {other_text}"


def sections_markdown(results: dict[str, Any], more: list[dict[str, Any]] | None = None) -> str:
    """The "Scale-out" and "No regression" sections of docs/benchmarks.md; ``more``:
    further runs of the before/after pair (:func:`further_runs`)."""
    meta = results["meta"]
    runs = results["runs"]
    summary = results["summary"]["W2"]
    servers = summary["servers"]
    params = meta["params"]["W2"]
    before, after, redis = _roles(meta)
    variants = meta.get("variants") or {}
    out: list[str] = [SECTIONS_BEGIN, ""]
    add = out.append

    # --- scale-out -----------------------------------------------------------------
    add("## Scale-out: fan-out across nodes\n")
    members, messages = params["members"], params["messages"]
    add(f"W2 as above ({members} members in one room, one more member publishing "
        f"{messages:,} messages of ~100 bytes with a window of {params['window']}: "
        f"{members * messages:,} deliveries, all checked), in three configurations side by "
        f"side in one run, all at {_commit_text(meta, after) if after else 'HEAD'}:\n")
    add("- **in-memory adapter, one node** (the default, no Redis): the reference;")
    add("- **Redis adapter, one node** (`eventbus serve APP --redis URL`): every publish "
        "goes through Redis (one Lua script takes the room's position and publishes) and "
        "comes back to the node over its subscription before the node delivers it;")
    add(f"- **Redis adapter, two nodes**: two `eventbus serve` processes on their own "
        f"ports, one bus through one Redis; the load generator connects half the members "
        f"to each node (member *i* to node *i* mod 2: "
        f"{members // 2 + members % 2} and {members // 2}) and publishes from node 1.\n")
    add("Redis is a `redis-server` (" + (meta["versions"].get("redis", {})
                                         .get("redis-server", "?")) + ") that the runner "
        "starts for the run on a free port on 127.0.0.1 (`--save \"\" --appendonly no`) "
        "and stops after; each run has its own key prefix.\n")
    add("**The cores are oversubscribed**, and the wall-clock figures say little about "
        "scaling: the machine has 2 cores; every eventbus node is pinned to core 0, the "
        "load generator and redis-server to core 1. The two nodes therefore share one "
        "core, and the load generator (which already needs most of its core for one node) "
        "shares its core with Redis. Deliveries/s here measure one core's worth of "
        "eventbus, not two; more nodes on more cores is what scale-out is for, and this "
        "machine cannot show it. **The fair figure is CPU time per delivery per node**: "
        "each node's own CPU time (utime+stime from `/proc/<pid>/stat`, over the timed "
        "part) divided by the deliveries to the members connected to that node. *All "
        "nodes* is the nodes' CPU time together over all deliveries (what the bus spends "
        "per delivery); redis-server's CPU time per delivery is listed on its own.\n")
    add("| Configuration | deliveries/s | s until the last member has all | "
        "CPU µs per delivery, all nodes | node 1 (publisher's) | node 2 | redis-server | "
        "nodes' CPU (share of core 0) | load generator CPU | runs |")
    add("|---|---|---|---|---|---|---|---|---|---|")
    for server in [s for s in [after, *redis] if s and s in servers]:
        entry = servers[server]
        nodes = entry.get("nodes") or []
        v = variants.get(server, {})
        name = ("in-memory, 1 node" if v.get("adapter") == "memory" else
                f"Redis, {v.get('nodes', 1)} node{'s' if v.get('nodes', 1) > 1 else ''}")
        node_cells = [spread(n.get("us_per_delivery")) for n in nodes[:2]]
        node_cells += ["-"] * (2 - len(node_cells))
        if len(nodes) < 2:
            node_cells[0] = "(= all nodes)"
        redis_cpu = spread(entry.get("redis_us_per_op")) if entry.get("redis_us_per_op") \
            else "-"
        runs_text = f"{entry['runs'] - entry['failed']}/{entry['runs']} ok"
        if entry.get("contended_runs"):
            runs_text += f" ({entry['contended_runs']} contended)"
        sat = " ⚠ saturated" if entry.get("loadgen_saturated_runs") else ""
        add(f"| {name} | {spread(entry.get('deliveries_per_s'))} | "
            f"{spread(entry.get('seconds_to_last_delivery'))} | "
            f"{spread(entry.get('server_us_per_op'))} | {' | '.join(node_cells)} | "
            f"{redis_cpu} | {_pct(entry.get('server_cpu'))} | "
            f"{_pct(entry.get('loadgen_cpu'))}{sat} | {runs_text} |")
    add("")
    if after:
        rows = []
        for server in [s for s in redis if s in servers]:
            pair = _pair(summary, server, after)
            if not pair:
                continue
            v = variants.get(server, {})
            name = f"Redis, {v.get('nodes', 1)} node{'s' if v.get('nodes', 1) > 1 else ''}"
            per_node = [_ratio(n) for n in pair.get("node_us_per_op") or []]
            per_node += ["-"] * (2 - len(per_node))
            if v.get("nodes", 1) < 2:
                per_node = ["(= all nodes)", "-"]
            rows.append(f"| {name} | {_ratio(pair.get('deliveries_per_s'))} | "
                        f"{_ratio(pair.get('server_us_per_op'))} | {' | '.join(per_node[:2])} |")
        if rows:
            add("Ratios to the in-memory node, within each repetition (median, min-max), "
                "CPU per delivery: above 1 costs more than one node alone:\n")
            add("| Configuration | deliveries/s, / in-memory | CPU per delivery, all nodes, / "
                "in-memory | node 1, / in-memory | node 2, / in-memory |")
            add("|---|---|---|---|---|")
            out.extend(rows)
            add("")

    # --- before and after -----------------------------------------------------------
    add("## No regression: W2 before and after the adapter seam\n")
    if before and after and before in servers and after in servers:
        b, a = servers[before], servers[after]
        add(f"W2 with the in-memory adapter on one node, *before* at "
            f"{_commit_text(meta, before)} (the start of the work on the adapter seam and "
            f"the Redis adapter) and *after* at {_commit_text(meta, after)}, side by side "
            "in the same run "
            "(the same repetitions and rotation as above). The server of *before* runs "
            "from that commit's `eventbus` package, extracted with `git archive` and put "
            "first on `PYTHONPATH`; both serve the same app "
            "(`benchmarks/apps/eventbus_app.py`) to the same load generator.\n")
        add("| eventbus | deliveries/s | s until the last member has all | server CPU µs "
            "per delivery | server CPU | load generator CPU | runs |")
        add("|---|---|---|---|---|---|---|")
        for label, entry in (("before", b), ("after", a)):
            server = before if label == "before" else after
            runs_text = f"{entry['runs'] - entry['failed']}/{entry['runs']} ok"
            if entry.get("contended_runs"):
                runs_text += f" ({entry['contended_runs']} contended)"
            sat = " ⚠ saturated" if entry.get("loadgen_saturated_runs") else ""
            add(f"| {label}: `{(variants.get(server) or {}).get('commit', server)}` | "
                f"{spread(entry.get('deliveries_per_s'))} | "
                f"{spread(entry.get('seconds_to_last_delivery'))} | "
                f"{spread(entry.get('server_us_per_op'))} | {_pct(entry.get('server_cpu'))} | "
                f"{_pct(entry.get('loadgen_cpu'))}{sat} | {runs_text} |")
        add("")
        pair = _pair(summary, after, before)
        if pair:
            cost, speed = pair.get("server_us_per_op"), pair.get("deliveries_per_s")
            add(f"**After / before**, within each repetition: server CPU per delivery "
                f"{_ratio(cost)} (below 1: cheaper after); deliveries/s {_ratio(speed)}.")
        median = (a.get("server_us_per_op") or {}).get("median")
        if median is not None:
            reference = ""
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                latest = json.loads(LATEST_JSON.read_text())
                ref = latest["summary"]["W2"]["servers"]["eventbus"]["server_us_per_op"]
                reference = (f" ({fmt(ref['median'])} µs in the main table above, run at "
                             f"`{latest['meta']['git']}`)")
            ok = "✅ met" if median <= W2_CPU_TARGET_US else "❌ missed"
            add(f"The issue's target, W2 server CPU per delivery at most "
                f"{W2_CPU_TARGET_US} µs with the in-memory adapter{reference}: "
                f"{fmt(median)} µs after, {ok}.\n")
        add(_further_text(results, more or [], before, after))
        add(_profile_comparison(meta, before, after))
    else:
        add("(This run had no before/after pair of in-memory variants.)\n")

    # What the numbers do not say by themselves, written by people.
    notes = Path(__file__).with_name("SCALEOUT.md")
    if notes.is_file():
        add(notes.read_text().rstrip() + "\n")
    add("### Method and noise (both sections)\n")
    add(_noise_text(meta, runs))
    add("Reproduce (about "
        f"{max(1, round(meta['elapsed_s'] / 60))} min here, plus the profiles):\n")
    add("```sh\n"
        f"{_command(meta)}\n"
        "python3 benchmarks/run.py --quick --scaleout   # smoke test, seconds\n"
        "python3 benchmarks/run.py --servers eventbus@3fb6785,eventbus,eventbus+redis2 "
        "--workloads W2   # the working tree\n"
        "```\n")
    add(SECTIONS_END)
    return "\n".join(out) + "\n"


def _profile_comparison(meta: dict[str, Any], before: str, after: str) -> str:
    profiles = meta.get("profiles") or {}
    pb, pa = profiles.get(f"W2 {before}"), profiles.get(f"W2 {after}")
    if not pb or not pa:
        return ""
    ub, ua = pb.get("server_us_per_op"), pa.get("server_us_per_op")

    def shares(top: dict[str, Any], key: str) -> dict[str, float]:
        return {name: pct for pct, name in top.get(key) or []}

    lines = [
        "Where the time goes, before and after: py-spy (`--nonblocking`, 200 Hz) on the "
        "server during one more run of each (`--profile W2`, not in the figures above). "
        "Share of samples with the function on top of the stack (self), and that share of "
        "the profiled run's server CPU per delivery "
        f"({fmt(ub)} µs before, {fmt(ua)} µs after; samples: {pb['samples']:,} before, "
        f"{pa['samples']:,} after):\n",
        "| function (self) | before % | before µs | after % | after µs | after - before µs |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    # Every function's self share (self_all), or the top of the list in older results.
    sb = shares(pb, "self_all") or shares(pb, "self")
    sa = shares(pa, "self_all") or shares(pa, "self")
    names = sorted(set(sb) | set(sa), key=lambda n: (-max(sb.get(n, 0), sa.get(n, 0)), n))
    for name in names[:14]:
        b, a = sb.get(name, 0.0), sa.get(name, 0.0)
        mb = b * ub / 100 if ub else None
        ma = a * ua / 100 if ua else None
        diff = f"{ma - mb:+.3f}" if mb is not None and ma is not None else "-"
        lines.append(f"| `{name}` | {b:.1f} | {_us(mb)} | {a:.1f} | {_us(ma)} | {diff} |")
    lines.append("")
    return "\n".join(lines) + "\n"


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def insert_sections(doc: str, sections: str) -> str:
    """``doc`` with its scale-out sections replaced by ``sections`` (or, the first
    time, put in before the hand-written analysis, else before the method)."""
    if "<!-- scaleout:begin" in doc and SECTIONS_END in doc:
        head, _, rest = doc.partition("<!-- scaleout:begin")
        _, _, tail = rest.partition(SECTIONS_END)
        return head + sections.rstrip("\n") + tail
    for anchor in ("\n## Targets missed", "\n## Method\n"):
        if anchor in doc:
            head, _, tail = doc.partition(anchor)
            return head + "\n" + sections + anchor + tail
    return doc.rstrip("\n") + "\n\n" + sections


# --- the section of a metrics run (run.py --metrics-cost) -----------------------------

METRICS_BEGIN = ("<!-- metrics:begin: written by `benchmarks/run.py --metrics-cost` from "
                 "benchmarks/results/metrics.json; edit benchmarks/report.py or "
                 "benchmarks/METRICS.md instead -->")
METRICS_END = "<!-- metrics:end -->"
METRICS_JSON = Path(__file__).with_name("results") / "metrics.json"
METRICS_POINTER = (
    "What counting for Prometheus costs (W1 and W2 with metrics on and off) comes from a "
    "run of its own (`run.py --metrics-cost`): "
    "[Metrics: the cost of counting](#metrics-the-cost-of-counting), below.")
METRICS_LIMIT = 0.03  # the issue's: on and off differ by less than 3%
METRICS_BEFORE_DEFAULT = "6a53bc1"


def _ratio_pct(stat: dict[str, float] | None) -> str:
    """A ratio with three decimals and as a change: **1.012x** (+1.2%) (0.990-1.030)."""
    if not stat:
        return "-"
    return (f"**{stat['median']:.3f}x** ({100 * (stat['median'] - 1):+.1f}%; "
            f"{stat['min']:.3f}-{stat['max']:.3f})")


def _metrics_command(meta: dict[str, Any]) -> str:
    roles = meta.get("metrics_cost") or {}
    parts = ["python3 benchmarks/run.py", "--metrics-cost"]
    before = roles.get("before")
    ref = ((meta.get("variants") or {}).get(before) or {}).get("ref") if before else "none"
    if ref != METRICS_BEFORE_DEFAULT:
        parts.append(f"--before {ref}")
    if meta.get("quick"):
        parts.append("--quick")
    if meta.get("reps") != (1 if meta.get("quick") else 3):
        parts.append(f"--reps {meta['reps']}")
    if meta.get("nice"):
        parts.append(f"--nice {meta['nice']}")
    profiled = sorted({key.split()[0] for key in meta.get("profiles") or {}})
    if profiled:
        parts.append("--profile " + ",".join(profiled))
        profiling = meta.get("profiling") or {}
        if profiling.get("W1_seconds"):
            parts.append(f"--profile-seconds {profiling['W1_seconds']:g}")
        if profiling.get("rate", 200) != 200:
            parts.append(f"--profile-rate {profiling['rate']}")
        if profiling.get("blocking"):
            parts.append("--profile-blocking")
    return " ".join(parts)


def metrics_markdown(results: dict[str, Any]) -> str:
    """The "Metrics: the cost of counting" section of docs/benchmarks.md."""
    meta = results["meta"]
    runs = results["runs"]
    roles = meta["metrics_cost"]
    off, on, before = roles["off"], roles["on"], roles.get("before")
    variants = meta.get("variants") or {}
    titles = titles_for(meta)
    out: list[str] = [METRICS_BEGIN, ""]
    add = out.append
    add("## Metrics: the cost of counting\n")
    add("The bus counts what it does for Prometheus (`GET /metrics`, "
        "`eventbus/server/metrics.py`): every packet received and sent (`connection.py`), "
        "every broadcast once, not once per member (`router.py`), and the duration of "
        "every handler (`dispatch.py`: two clock reads and a histogram bucket). The "
        "operations issue asks that counting not slow the hot path measurably: **W1 and "
        "W2 with metrics on and off, side by side, differ by less than "
        f"{100 * METRICS_LIMIT:.0f}%**.\n")
    commit = _commit_text(meta, on)
    add(f"Side by side in one run, all at {commit} but the reference, each from its "
        "commit's `eventbus` package (extracted with `git archive`), serving the same app "
        "(`benchmarks/apps/eventbus_app.py`) to the same load generator:\n")
    add(f"- **off**: `{off}`, the app's bus with `metrics=False` (the runner gives the "
        "app the setting in `BENCH_EVENTBUS_SETTINGS`; `bus.metrics` is `None`, and "
        "nothing is counted);")
    add(f"- **on**: `{on}`, the default (`metrics=True`)" + (";" if before else ".\n"))
    if before:
        subject = (variants.get(before) or {}).get("subject")
        add(f"- **before** (a reference): `{before}`"
            + (f" (\"{subject}\")" if subject else "")
            + ", the commit before metrics: no counting, and no `if metrics is not None` "
            "tests on the hot path.\n")
    add("W1 and W2 are the workloads of the main tables above (W1: "
        f"{meta['params']['W1']['conns']} connections in closed loops of `echo` with an "
        "ack, the event layer's cost per request; W2: "
        f"{meta['params']['W2']['members']} members, "
        f"{meta['params']['W2']['messages']:,} publishes, the fan-out). The figure that "
        "decides is the server's **CPU time per operation** (per ack, per delivery), "
        "which other work on the machine changes far less than throughput; the "
        "throughput is there too.\n")
    order = [s for s in (before, off, on) if s]
    name_of = {off: "off", on: "on", before: "before"}
    add("| Workload | metrics | eventbus | throughput | latency / duration | server CPU "
        "µs per op | of which user / system | server CPU | load generator CPU | runs |")
    add("|---|---|---|---|---|---|---|---|---|---|")
    for workload, data in results["summary"].items():
        metric = data["metric"]
        extra = "p50_ms" if workload == "W1" else "seconds_to_last_delivery"
        for server in order:
            entry = data["servers"].get(server)
            if not entry:
                continue
            lat = entry.get(extra)
            if workload == "W1" and entry.get("p99_ms"):
                lat_text = (f"p50 {spread(lat)} ms, p99 {fmt(entry['p99_ms']['median'])} ms"
                            if lat else "-")
            else:
                lat_text = f"{spread(lat)} s" if lat else "-"
            runs_text = f"{entry['runs'] - entry['failed']}/{entry['runs']} ok"
            if entry.get("contended_runs"):
                runs_text += f" ({entry['contended_runs']} contended)"
            sat = " ⚠ saturated" if entry.get("loadgen_saturated_runs") else ""
            user, system = entry.get("server_user_us_per_op"), \
                entry.get("server_system_us_per_op")
            parts = f"{_med(user)} / {_med(system)}" if user and system else "-"
            add(f"| {titles[workload]} | {name_of[server]} | "
                f"`{(variants.get(server) or {}).get('commit', server)}` | "
                f"{spread(entry.get(metric))} {UNITS[metric]} | {lat_text} | "
                f"{spread(entry.get('server_us_per_op'))} | {parts} | "
                f"{_pct(entry.get('server_cpu'))} | "
                f"{_pct(entry.get('loadgen_cpu'))}{sat} | {runs_text} |")
    add("")
    add("*User* is the CPU time the server spent in its own code (the Python "
        "interpreter), *system* the time the kernel spent on its behalf (its socket "
        "reads and writes, epoll), both from `/proc/<pid>/stat` (utime, stime; medians).\n")
    add("**On / off**, within each repetition (median, and the change it means; min-max "
        "over the repetitions). CPU per operation above 1 is dearer with metrics on; "
        "throughput below 1 is slower:\n")
    header = ("| Workload | server CPU per op, on / off | throughput, on / off | "
              f"< {100 * METRICS_LIMIT:.0f}%? | user / system µs per op, on - off (median) |")
    rule = "|---|---|---|---|---|"
    if before:
        header += " CPU per op, off / before | CPU per op, on / before |"
        rule += "---|---|"
    add(header)
    add(rule)
    verdicts = []
    for workload, data in results["summary"].items():
        pairs = data.get("pairs") or {}
        pair = pairs.get(f"{on} / {off}") or {}
        cost, speed = pair.get("server_us_per_op"), pair.get(data["metric"])
        ok = None
        if cost and speed:
            # One-sided: counting must not make the bus dearer or slower; a run where
            # "on" came out cheaper is noise, not a breach.
            ok = cost["median"] < 1 + METRICS_LIMIT and speed["median"] > 1 - METRICS_LIMIT
            verdicts.append((workload, ok, cost["median"], speed["median"]))
        diffs = [_stat(_rep_diffs(runs, workload, on, off, name))
                 for name in ("server_user_us_per_op", "server_system_us_per_op")]
        row = (f"| {titles[workload]} | {_ratio_pct(cost)} | {_ratio_pct(speed)} | "
               f"{'-' if ok is None else '✅ yes' if ok else '❌ no'} | "
               + " / ".join(f"{d['median']:+.2f}" if d else "-" for d in diffs) + " |")
        if before:
            row += "".join(
                f" {_ratio_pct((pairs.get(f'{a} / {before}') or {}).get('server_us_per_op'))} |"
                for a in (off, on))
        add(row)
    add("")
    if verdicts:
        met = all(ok for _, ok, _, _ in verdicts)
        add(("**The requirement is met**" if met else "**The requirement is not met**")
            + ": " + "; ".join(
                f"{w} costs {100 * (c - 1):+.1f}% CPU per operation with metrics on, "
                f"throughput {100 * (t - 1):+.1f}%" for w, _, c, t in verdicts) + ".\n")
    add(_metrics_profiles(meta, off, on))
    notes = Path(__file__).with_name("METRICS.md")
    if notes.is_file():
        add(notes.read_text().rstrip() + "\n")
    add("### Method and noise (metrics)\n")
    add(_noise_text(meta, runs, cost="CPU time per operation (per ack, per delivery)",
                    noisy="The throughput columns are"))
    add(f"Reproduce (about {max(1, round(meta['elapsed_s'] / 60))} min here"
        + (", plus the profiles" if meta.get("profiles") else "") + "):\n")
    add("```sh\n"
        f"{_metrics_command(meta)}\n"
        "python3 benchmarks/run.py --quick --metrics-cost   # smoke test, seconds\n"
        "python3 benchmarks/run.py --servers eventbus-nometrics,eventbus --workloads W1,W2 "
        "--no-report   # the working tree\n"
        "```\n")
    add(METRICS_END)
    return "\n".join(out) + "\n"


def _rep_diffs(runs: list[dict[str, Any]], workload: str, a: str, b: str,
               name: str) -> list[float]:
    """``name`` of server a minus server b, within each repetition."""
    out = []
    for rep in sorted({r["rep"] for r in runs}):
        pick = [[r["metrics"].get(name) for r in runs if r["rep"] == rep and r["ok"]
                 and r["workload"] == workload and r["server"] == server]
                for server in (a, b)]
        if pick[0] and pick[1] and pick[0][0] is not None and pick[1][0] is not None:
            out.append(pick[0][0] - pick[1][0])
    return out


def _counting_line(name: str, source: str) -> bool:
    """A line of the counting itself: it names the metrics, is in metrics.py, or ends
    the handler's timing."""
    return "metrics" in source or "(metrics.py:" in name or \
        source.startswith("trio.current_time() - started")


def _metrics_profiles(meta: dict[str, Any], off: str, on: str) -> str:
    """Line by line, where the time goes with metrics off and on (py-spy)."""
    profiles = meta.get("profiles") or {}
    profiling = meta.get("profiling") or {}
    out = []
    for workload in meta["workloads"]:
        how = (f"{'blocking' if profiling.get('blocking') else '`--nonblocking`'}, "
               f"{profiling.get('rate', 200)} Hz"
               + (f", measured for {profiling['W1_seconds']:g} s"
                  if profiling.get("W1_seconds") and workload == "W1" else ""))
        po, pn = profiles.get(f"{workload} {off}"), profiles.get(f"{workload} {on}")
        if not po or not pn or "eventbus_lines" not in po or "eventbus_lines" not in pn:
            continue
        uo, un = po.get("server_us_per_op"), pn.get("server_us_per_op")
        if not uo or not un:
            continue
        lo = {name: (pct, src) for pct, name, src in po["eventbus_lines"]}
        ln = {name: (pct, src) for pct, name, src in pn["eventbus_lines"]}
        out += [
            f"**Where the time goes in {workload}, off and on**: py-spy ({how}) on the "
            "server during one more run of each (`--profile`, not in the figures above). "
            "Each sample is charged to the innermost line of eventbus code on its stack (the "
            "line running, or calling the library or system call that runs), and a line's "
            "share of the samples is turned into µs per operation with the profiled run's "
            f"own server CPU per operation ({fmt(uo)} µs off, {fmt(un)} µs on; "
            f"{po['samples']:,} and {pn['samples']:,} samples). The lines with the largest "
            "differences, and the lines of the counting together:\n",
            "| line | code | off % | off µs | on % | on µs | on - off µs |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]

        def us(name: str, table: dict[str, tuple[float, str]], total: float) -> float:
            return table.get(name, (0.0, ""))[0] * total / 100

        names = sorted(set(lo) | set(ln),
                       key=lambda n: (-abs(us(n, ln, un) - us(n, lo, uo)), n))
        for name in names[:14]:
            source = (ln.get(name) or lo.get(name) or (0.0, ""))[1]
            code = (source if len(source) <= 60 else source[:57] + "...").replace("|", "\\|")
            a, b = lo.get(name, (0.0, ""))[0], ln.get(name, (0.0, ""))[0]
            out.append(f"| `{name}` | `{code}` | {a:.2f} | {us(name, lo, uo):.3f} | "
                       f"{b:.2f} | {us(name, ln, un):.3f} | "
                       f"{us(name, ln, un) - us(name, lo, uo):+.3f} |")
        counting = [n for n in set(lo) | set(ln)
                    if _counting_line(n, (ln.get(n) or lo.get(n) or (0.0, ""))[1])]
        a = sum(lo.get(n, (0.0, ""))[0] for n in counting)
        b = sum(ln.get(n, (0.0, ""))[0] for n in counting)
        sa, sb = sum(us(n, lo, uo) for n in counting), sum(us(n, ln, un) for n in counting)
        out.append(f"| **the counting** ({len(counting)} lines) | lines naming `metrics`, "
                   f"in `metrics.py`, the handler's timing | {a:.2f} | {sa:.3f} | {b:.2f} | "
                   f"{sb:.3f} | {sb - sa:+.3f} |")
        out.append(f"| **all** | the profiled runs' server CPU per operation | 100 | "
                   f"{uo:.3f} | 100 | {un:.3f} | {un - uo:+.3f} |")
        out.append("")
    return "\n".join(out) + ("\n" if out else "")


def insert_metrics_section(doc: str, section: str) -> str:
    """``doc`` with its metrics section replaced by ``section`` (or, the first time,
    put in after the scale-out sections, else before the hand-written analysis, else
    before the method)."""
    if "<!-- metrics:begin" in doc and METRICS_END in doc:
        head, _, rest = doc.partition("<!-- metrics:begin")
        _, _, tail = rest.partition(METRICS_END)
        return head + section.rstrip("\n") + tail
    if SECTIONS_END in doc:
        head, _, tail = doc.partition(SECTIONS_END)
        return head + SECTIONS_END + "\n\n" + section.rstrip("\n") + tail
    for anchor in ("\n## Targets missed", "\n## Method\n"):
        if anchor in doc:
            head, _, tail = doc.partition(anchor)
            return head + "\n" + section + anchor + tail
    return doc.rstrip("\n") + "\n\n" + section



if __name__ == "__main__":
    main()
