"""Judge each scenario against the goals, and draw the table."""

from __future__ import annotations

from typing import Any

from .runner import (
    FD_LIMIT,
    LOG_WARN_BYTES_PER_S,
    NEWCOMER_DEADLINE_S,
    P99_IDLE_FACTOR,
    P99_LIMIT_MS,
    QUIET,
)

__all__ = ["judge", "markdown_table"]

MIB = 1024 * 1024
# Cores busy during the idle phase above which other work probably disturbed it (the
# server and the bystander alone use about 0.05).
BUSY_IDLE = 0.3


def judge(record: dict[str, Any], bound: int) -> dict[str, Any]:
    """The checks of one scenario, and PASS only if all of them hold.

    - ``p99``: the bystander's flood p99 is under :data:`P99_LIMIT_MS` and every one
      of its requests was answered;
    - ``p99_vs_idle``: the flood p99 is within :data:`P99_IDLE_FACTOR` of the idle p99;
    - ``memory``: the server's peak RSS grew by at most ``bound`` per abusive
      connection over its RSS just before the flood (fd-exhaustion: :data:`FD_LIMIT`
      connections), and the server was not killed;
    - ``newcomers`` (fd-exhaustion only): every new client probed during the flood got
      its welcome and an echo answer within :data:`NEWCOMER_DEADLINE_S`.
    """
    if "error" in record:
        return {"verdict": "ERROR", "failed": ["run"], "checks": {}}
    idle, flood = record["idle"], record["flood"]
    checks: dict[str, bool] = {}
    flood_p99 = flood["p99_ms"]
    checks["p99"] = (flood_p99 is not None and flood["failed"] == 0
                     and flood["requests"] > 0 and flood_p99 < P99_LIMIT_MS)
    ratio = None
    if flood_p99 is not None and idle["p99_ms"]:
        ratio = flood_p99 / idle["p99_ms"]
    checks["p99_vs_idle"] = ratio is not None and ratio <= P99_IDLE_FACTOR
    abusive = FD_LIMIT if record["scenario"] == "fd-exhaustion" else 1
    growth = 1024 * (record["peak_rss_kib"] - (record["idle_rss_kib"] or 0))
    checks["memory"] = growth <= bound * abusive and not record["server_killed"]
    if record["scenario"] == "fd-exhaustion":
        probes = record["newcomers"]
        checks["newcomers"] = bool(probes) and all(p["ok"] for p in probes)
    failed = [name for name, ok in checks.items() if not ok]
    log_rate = record["log_bytes"] / max(1e-9, record["flood_elapsed_s"])
    return {
        "verdict": "FAIL" if failed else "PASS", "failed": failed, "checks": checks,
        "p99_ratio": None if ratio is None else round(ratio, 2),
        "rss_growth_bytes": growth, "memory_allowed_bytes": bound * abusive,
        "log_bytes_per_s": round(log_rate), "log_warning": log_rate > LOG_WARN_BYTES_PER_S,
    }


def _ms(value: float | None) -> str:
    if value is None:
        return "∞"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _size(value: float) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", MIB), ("KiB", 1024)):
        if abs(value) >= scale:
            return f"{value / scale:.1f} {unit}"
    return f"{value:.0f} B"


def _server_did(record: dict[str, Any]) -> str:
    notes = []
    if record.get("server_killed"):
        notes.append(f"**killed: {record['server_killed']}**")
    abuser = record.get("abuser", {})
    closes = abuser.get("closes") or {}
    if closes:
        notes.append("closed the abuser " + ", ".join(
            f"{code} x{count}" for code, count in sorted(closes.items())))
    if record["scenario"] == "fd-exhaustion":
        notes.append(f"held {abuser.get('peak_open', 0)} silent sockets open, closed "
                     f"{abuser.get('closed_by_server', 0)}")
    elif not closes and record.get("server_alive"):
        notes.append("never closed the abuser")
    log = record.get("log", {})
    if log.get("tracebacks"):
        notes.append(f"{log['tracebacks']} tracebacks")
    if log.get("emfile"):
        notes.append(f"{log['emfile']} EMFILE lines")
    if log.get("forged_lines"):
        notes.append(f"{log['forged_lines']:,} forged log lines")
    probes = record.get("newcomers") or []
    if probes:
        good = sum(1 for p in probes if p["ok"])
        notes.append(f"new clients {good}/{len(probes)} in {NEWCOMER_DEADLINE_S:g} s")
    if record.get("load_before", 0) > QUIET or (record.get("machine_busy_idle") or 0) > BUSY_IDLE:
        notes.append(f"⚠ machine busy (idle phase: {record.get('machine_busy_idle')} cores)")
    if record.get("bystander_closed"):
        notes.append(f"bystander closed ({record['bystander_closed']})")
    return "; ".join(notes)


def _units(record: dict[str, Any]) -> str:
    abuser = record.get("abuser", {})
    seconds = max(1e-9, abuser.get("ended", 1) - abuser.get("started", 0))
    if record["scenario"] == "fd-exhaustion":
        return f"{abuser.get('opened', 0):,} sockets"
    what = {"empty-continuations": "frames", "ping-flood": "pings",
            "one-byte-frames": "frames"}.get(record["scenario"], "messages")
    connections = abuser.get("connections", 0)
    return (f"{abuser.get('units', 0) / seconds:,.0f} {what}/s "
            f"({_size(abuser.get('bytes_sent', 0) / seconds)}/s) on {connections} "
            f"connection{'s' if connections != 1 else ''}")


def markdown_table(records: list[dict[str, Any]]) -> str:
    """One row per scenario: what the bystander saw, what the server did, the verdict."""
    lines = [
        "| Scenario | abuser wrote | bystander p99 idle → flood (ms) | x idle | "
        "failed requests | server RSS idle → peak | growth / allowed | log written | "
        "server | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for record in records:
        result = record["result"]
        if result["verdict"] == "ERROR":
            lines.append(f"| {record['scenario']} | | | | | | | | {record['error']} | ERROR |")
            continue
        idle, flood = record["idle"], record["flood"]
        ratio = "-" if result["p99_ratio"] is None else f"{result['p99_ratio']:.1f}"
        failed = f"{flood['failed']}/{flood['requests']}"
        rss = (f"{_size(1024 * (record['idle_rss_kib'] or 0))} → "
               f"{_size(1024 * record['peak_rss_kib'])}")
        growth = (f"{_size(result['rss_growth_bytes'])} / "
                  f"{_size(result['memory_allowed_bytes'])}")
        log = f"{_size(record['log_bytes'])} ({_size(result['log_bytes_per_s'])}/s)"
        if result["log_warning"]:
            log += " ⚠"
        verdict = result["verdict"]
        if result["failed"]:
            verdict += " (" + ", ".join(result["failed"]) + ")"
        lines.append(
            f"| {record['scenario']} | {_units(record)} | {_ms(idle['p99_ms'])} → "
            f"{_ms(flood['p99_ms'])} | {ratio} | {failed} | {rss} | {growth} | {log} | "
            f"{_server_did(record)} | **{verdict}** |")
    return "\n".join(lines)
