#!/usr/bin/env python3
"""What each count on W1's path costs by itself: a micro-benchmark of the counting.

    .venv/bin/python benchmarks/metrics_micro.py              # the working tree's eventbus
    PYTHONPATH=benchmarks/results/tmp/server-<commit> .venv/bin/python \\
        benchmarks/metrics_micro.py                           # a commit's (run.py extracts it)

One W1 ack passes three places that count when metrics are on (the statements are
those of eventbus/server at the time of writing, copied here): the packet received
(``Connection._on_packet_data``), the packet sent (``Connection.frame``), and the
handler's duration (``Dispatcher._run_handler``: two clock reads and a histogram
bucket). Each runs here in a loop, inside ``trio.run``,
with the bus's real ``Metrics`` and with ``None`` (metrics off: only the ``is not
None`` tests remain); the difference is the cost of counting, in ns. It is a lower
bound: in the loop the code and data are hot in the caches, which the server's full
path per ack is not. ``benchmarks/run.py --metrics-cost`` measures the whole.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from bisect import bisect_left
from collections.abc import Callable
from time import perf_counter
from typing import Any

import trio

import eventbus
from eventbus.protocol import Ack, Emit
from eventbus.server.metrics import DURATION_BUCKETS, UNKNOWN_EVENT, Metrics

LOOPS = 200_000
ROUNDS = 7


class _Codec:
    name = "json"


class _Bus:
    def __init__(self, metrics: Metrics | None) -> None:
        self.metrics = metrics


class _Conn:
    def __init__(self, bus: _Bus) -> None:
        self._bus = bus
        self._codec = _Codec()
        metrics = bus.metrics
        # As the connection holds its codec's counters.
        self._counts_in = metrics.received[self._codec.name] if metrics is not None else None
        self._counts_out = metrics.sent[self._codec.name] if metrics is not None else None

    def received(self, packet: Any) -> None:
        # Connection._on_packet_data
        if self._counts_in is not None:
            self._counts_in[type(packet)] += 1

    def sent(self, packet: Any) -> None:
        # Connection.frame
        if self._counts_out is not None:
            self._counts_out[type(packet)] += 1


def _handler_timing(bus: _Bus, packet: Emit, handler: object) -> None:
    # Dispatcher._run_handler, around the handler's call
    metrics = bus.metrics
    started = perf_counter() if metrics is not None else 0.0
    try:
        pass
    finally:
        if metrics is not None:
            elapsed = perf_counter() - started
            name = packet.event if handler is not None else UNKNOWN_EVENT
            histogram = metrics.handlers.get(name) or metrics.new_histogram(name)
            histogram.buckets[bisect_left(DURATION_BUCKETS, elapsed)] += 1
            histogram.sum += elapsed


def _nothing(conn: _Conn, packet: Any) -> None:
    pass


def _time(fn: Callable[[], None]) -> float:
    """Best-of-rounds ns per call of ``fn``, less the cost of the loop itself."""
    best = []
    for _ in range(ROUNDS):
        started = time.perf_counter_ns()
        for _ in range(LOOPS):
            fn()
        best.append((time.perf_counter_ns() - started) / LOOPS)
    return statistics.median(sorted(best)[:3])


async def main() -> dict[str, Any]:
    emit, ack = Emit("echo", {"x": 1}, 7), Ack(7, {"x": 1})
    handler = object()
    out: dict[str, Any] = {"eventbus": eventbus.__file__, "python": sys.version.split()[0]}
    sites: dict[str, Callable[[_Conn], Callable[[], None]]] = {
        "received (Connection._on_packet_data)": lambda c: lambda: c.received(emit),
        "sent (Connection.frame)": lambda c: lambda: c.sent(ack),
        "handler duration (Dispatcher._run_handler)":
            lambda c: lambda: _handler_timing(c._bus, emit, handler),
    }
    total = 0.0
    for name, make in sites.items():
        on, off = _Conn(_Bus(Metrics())), _Conn(_Bus(None))
        ns_on, ns_off = _time(make(on)), _time(make(off))
        out[name] = {"on_ns": round(ns_on, 1), "off_ns": round(ns_off, 1),
                     "counting_ns": round(ns_on - ns_off, 1)}
        total += ns_on - ns_off
    out["per W1 ack, ns"] = round(total, 1)
    return out


if __name__ == "__main__":
    result = trio.run(main)
    print(json.dumps(result, indent=1))
