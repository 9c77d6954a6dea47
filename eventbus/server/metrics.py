"""What a bus counts, for Prometheus: ``GET /metrics`` on the bus's own port.

On the hot path a count is a plain number: an integer attribute, or a
``collections.Counter`` keyed by a label value, updated once per packet or per
broadcast, never per recipient where it can be helped. The official
``prometheus_client`` turns them into metrics only when scraped, through a custom
collector (:class:`BusCollector`) on a registry of the bus's own, so that several
buses in one process do not share counts. Labels take a bounded set of values:
close codes, HTTP statuses, packet types, codecs, delivery policies, and the event
names the app registered handlers for (every other event is ``"(unknown)"``);
never a room or a session id.
"""

from __future__ import annotations

import typing
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ..protocol import Packet

if TYPE_CHECKING:
    from .app import EventBus
    from .connection import Connection

__all__ = ["CONTENT_TYPE", "BusCollector", "Metrics", "metric_reference"]

#: The content type of the exposition format ``generate_latest`` writes.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Upper bounds of the handler duration buckets, in seconds.
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                    2.5, 5.0, 10.0)
#: Adapter statistics that are levels (gauges) rather than counts.
ADAPTER_LEVELS = frozenset({"probe_lag_us", "queued", "inbox", "rooms", "nodes"})
#: The ``event`` label of handlers for events the app registered no handler for.
UNKNOWN_EVENT = "(unknown)"


class _Histogram:
    """Observations by bucket (the count is their sum, taken when scraped)."""

    __slots__ = ("buckets", "sum")

    def __init__(self) -> None:
        self.buckets = [0] * (len(DURATION_BUCKETS) + 1)
        self.sum = 0.0



class Metrics:
    """The counts of one bus (each attribute is one metric; see :func:`metric_reference`)."""

    def __init__(self) -> None:
        self.opened = 0
        self.closed: Counter[tuple[int, bool]] = Counter()  # (code, by_server)
        self.refused: Counter[int] = Counter()  # HTTP status
        # By codec, then by packet class: a connection holds its codec's counts, and
        # counting a packet is one update of a plain dict keyed by a class, every
        # class present from the start (a Counter, a dict subclass, misses the
        # interpreter's fast paths for dicts: twice the instructions per count).
        self.received: dict[str, dict[type, int]] = {"json": _per_packet(),
                                                       "msgpack": _per_packet()}
        self.sent: dict[str, dict[type, int]] = {"json": _per_packet(), "msgpack": _per_packet()}
        self.deliveries: Counter[str] = Counter()  # delivery policy
        self.refusals: Counter[str] = Counter()  # error code
        self.calls: Counter[str] = Counter()  # outcome
        self.handlers: dict[str, _Histogram] = {}
        self.resumes: Counter[str] = Counter()  # "recovered", or why not (room by room)
        self.replayed = 0
        # What connections that ended had dropped and reported, kept when they go.
        self._dropped = Counter[str]()
        #: GAP packets by the delivery policy of the drops they reported
        #: ("reliable": messages this node lost from its adapter).
        self.gaps = Counter[str]()

    def new_histogram(self, event: str) -> _Histogram:
        """The duration histogram of ``event``'s handler, made on its first run."""
        histogram = self.handlers[event] = _Histogram()
        return histogram

    def connection_ended(self, conn: Connection) -> None:
        """Keep the counts of a connection that ends (its outbox goes with it)."""
        self.closed[(conn.disconnect.code, conn.disconnect.by_server)
                    if conn.disconnect else (1006, False)] += 1
        volatile, latest, gap_volatile, gap_latest = _outbox_counts(conn)
        self._dropped["volatile"] += volatile
        self._dropped["latest"] += latest
        self.gaps["volatile"] += gap_volatile
        self.gaps["latest"] += gap_latest


def _per_packet() -> dict[type, int]:
    return dict.fromkeys(typing.get_args(Packet), 0)


def _by_type_and_codec(counts: Mapping[str, dict[type, int]]) -> dict[tuple[str, ...], float]:
    return {(kind.__name__, codec): n for codec, by_kind in counts.items()
            for kind, n in by_kind.items() if n}


def _outbox_counts(conn: Connection) -> tuple[int, int, int, int]:
    box = conn._outbox
    if box is None:
        return 0, 0, 0, 0
    return (box.dropped - box.dropped_latest, box.dropped_latest, box.gaps_volatile,
            box.gaps_latest)


class BusCollector(Collector):
    """Reads a bus's counts into Prometheus metrics when scraped."""

    def __init__(self, bus: EventBus) -> None:
        self._bus = bus

    def describe(self) -> Iterator[Metric]:
        return self._families(live=False)

    def collect(self) -> Iterator[Metric]:
        return self._families(live=True)

    def _families(self, *, live: bool) -> Iterator[Metric]:
        bus = self._bus
        m = bus.metrics if bus.metrics is not None else Metrics()  # off: all zero
        connections = list(bus.connections.values()) if live else []

        def counter(name: str, doc: str, labels: Sequence[str] = (),
                    values: Mapping[tuple[str, ...], float] | None = None) -> Metric:
            family = CounterMetricFamily(name, doc, labels=list(labels))
            for key, value in (values or {}).items():
                family.add_metric(list(key), value)
            return family

        def gauge(name: str, doc: str, value: float | None) -> Metric:
            family = GaugeMetricFamily(name, doc)
            if value is not None:
                family.add_metric([], value)
            return family

        yield gauge("eventbus_connections", "Open connections of this node.",
                    len(connections) if live else None)
        yield counter("eventbus_connections_opened", "Connections opened (upgraded).",
                      values={(): m.opened} if live else None)
        yield counter(
            "eventbus_connections_closed", "Connections closed, by close code and by whom.",
            ["code", "by"], {(str(code), "server" if by_server else "client"): count
                             for (code, by_server), count in m.closed.items()})
        yield counter("eventbus_handshakes_refused", "Handshakes refused, by HTTP status.",
                      ["status"], {(str(status),): n for status, n in m.refused.items()})
        yield gauge("eventbus_rooms", "Rooms with members on this node.",
                    len(bus._router.rooms) if live else None)
        yield counter("eventbus_packets_received", "Packets received, by type and codec.",
                      ["type", "codec"], _by_type_and_codec(m.received))
        yield counter("eventbus_packets_sent", "Packets sent, by type and codec.",
                      ["type", "codec"], _by_type_and_codec(m.sent))
        yield counter("eventbus_room_deliveries",
                      "Room messages handed to members of this node, by delivery policy.",
                      ["delivery"], {(policy,): n for policy, n in m.deliveries.items()})
        dropped = Counter(m._dropped)
        gaps = Counter(m.gaps)
        for conn in connections:
            volatile, latest, gap_volatile, gap_latest = _outbox_counts(conn)
            dropped["volatile"] += volatile
            dropped["latest"] += latest
            gaps["volatile"] += gap_volatile
            gaps["latest"] += gap_latest
        yield counter("eventbus_dropped", "Messages dropped for slow clients, by delivery policy.",
                      ["delivery"], {(policy,): n for policy, n in dropped.items()})
        yield counter("eventbus_gaps_sent",
                      "GAP packets sent to report drops, by the delivery policy of the drops"
                      " (reliable: room messages this node lost from its adapter).",
                      ["delivery"], {(policy,): n for policy, n in gaps.items() if n})
        yield counter("eventbus_refusals", "Packets refused unprocessed, by error code.",
                      ["code"], {(code,): n for code, n in m.refusals.items()})
        yield counter("eventbus_server_calls", "Server calls (sock.call, bus.call), by outcome.",
                      ["outcome"], {(outcome,): n for outcome, n in m.calls.items()})
        yield counter("eventbus_resumed_rooms",
                      "Rooms of RESUME requests, by verdict: recovered, or the reason why not"
                      " (resume_failed: the whole RESUME was refused, counted once).",
                      ["verdict"], {(verdict,): n for verdict, n in m.resumes.items()})
        yield counter("eventbus_replayed_messages",
                      "Room messages replayed to clients that resumed.",
                      values={(): m.replayed} if live else None)
        handlers = HistogramMetricFamily(
            "eventbus_handler_duration_seconds", "Handler run times, by event.",
            labels=["event"])
        for event, histogram in m.handlers.items():
            running, buckets = 0, []
            for bound, count in zip((*DURATION_BUCKETS, float("inf")), histogram.buckets,
                                    strict=True):
                running += count
                buckets.append((str(bound) if bound != float("inf") else "+Inf", running))
            handlers.add_metric([event], buckets, histogram.sum)
        yield handlers
        adapter = bus.adapter.statistics() if live else {}
        yield gauge("eventbus_adapter_connected",
                    "Whether this node reaches the other nodes of its bus (1) or not (0).",
                    (1.0 if bus.adapter.state.value == "connected" else 0.0) if live else None)
        numbers = {name: value for name, value in adapter.items()
                   if isinstance(value, int) and not isinstance(value, bool)}
        yield counter("eventbus_adapter_events",
                      "The adapter's own counts (reconnects, messages lost to outages, ...).",
                      ["name"], {(name,): value for name, value in numbers.items()
                                 if name not in ADAPTER_LEVELS})
        levels = GaugeMetricFamily(
            "eventbus_adapter_level",
            "The adapter's current levels (the last probe's round trip in microseconds, "
            "messages queued, rooms subscribed, ...).", labels=["name"])
        for name, value in numbers.items():
            if name in ADAPTER_LEVELS:
                levels.add_metric([name], value)
        yield levels


def registry_for(bus: EventBus) -> CollectorRegistry:
    """A registry of the bus's own, holding its collector."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(BusCollector(bus))
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    """The registry's metrics in the Prometheus text format."""
    return generate_latest(registry)


def metric_reference(bus: EventBus) -> list[tuple[str, str, list[str], str]]:
    """``(name, type, labels, help)`` of every metric a bus exposes, read from its
    collector (so that the docs' table cannot drift from the code)."""
    return [
        # The label names a family was made with (prometheus_client keeps them there).
        (family.name, family.type, list(getattr(family, "_labelnames", ())),
         family.documentation)
        for family in BusCollector(bus).describe()
    ]
