"""Server settings, with their defaults, in one frozen value."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from ..protocol import MAX_ELEMENTS, NAME_MAX_BYTES, WelcomeOptions

__all__ = ["ServerConfig"]


def _positive(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be positive, not {value!r}")


def _non_negative(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must not be negative, not {value!r}")


def _history_rules(_: object, attribute: attrs.Attribute[Any], value: Sequence[str]) -> None:
    from .history import parse_rule  # the rules' own module says what is wrong

    for rule in value:
        parse_rule(rule)


def _name_limit(_: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if not 0 < value <= NAME_MAX_BYTES:
        raise ValueError(f"{attribute.name} must be 1 to {NAME_MAX_BYTES}, not {value!r}")


@attrs.frozen(kw_only=True)
class ServerConfig:
    """Every setting of an :class:`~eventbus.EventBus`; times are in seconds.

    Settings marked *advertised* are sent to each client in its welcome packet.
    """

    #: Let clients join, leave and publish to any room without authorization hooks.
    open_rooms: bool = False
    #: Seconds between pings (advertised).
    ping_interval: float = attrs.field(default=25.0, validator=_positive)
    #: Seconds a client has to answer a ping before it is closed with 4002 (advertised).
    ping_timeout: float = attrs.field(default=20.0, validator=_positive)
    #: Largest message accepted, in bytes; a bigger one closes with 1009 (advertised).
    max_frame: int = attrs.field(default=1_048_576, validator=_positive)
    #: Most frames one message may arrive in; more closes with 1009.
    max_fragments: int = attrs.field(default=1024, validator=_positive)
    #: Most data values (arrays, maps and what they hold, counted recursively) one
    #: message may carry; more is refused with ``invalid_packet`` (advertised).
    max_elements: int = attrs.field(default=MAX_ELEMENTS, validator=_positive)
    #: Longest event or room name, in UTF-8 bytes (advertised).
    max_name: int = attrs.field(default=NAME_MAX_BYTES, validator=_name_limit)
    #: Rooms one connection may join by its own requests (advertised).
    max_rooms: int = attrs.field(default=100, validator=_positive)
    #: Client requests awaiting an answer, per connection (advertised).
    max_pending: int = attrs.field(default=64, validator=_positive)
    #: Bytes of requests that may wait for one connection's handlers, each counted
    #: as its size on the wire plus 80 bytes per data value and 256 bytes; beyond
    #: it, requests are refused with ``too_many_pending`` (one always fits).
    inbox_bytes: int = attrs.field(default=2 * 1_048_576, validator=_positive)
    #: Server calls awaiting a client's answer, per connection.
    max_calls: int = attrs.field(default=64, validator=_positive)
    #: Inbound tokens per second per connection, 0 for no limit (advertised): a
    #: packet costs one, and one more per 100 data values; a ping costs one, and
    #: each frame 1/16 (PROTOCOL.md section 12).
    rate: int = attrs.field(default=100, validator=_non_negative)
    #: Inbound packets a connection may send at once above the rate (advertised).
    burst: int = attrs.field(default=200, validator=_non_negative)
    #: Bytes per second one connection's reads are paced to, 0 for no pacing: above
    #: it (past a burst of ``max_frame`` + 64 KiB) the server stops reading from it
    #: for a while, so TCP slows the client down.
    receive_rate: int = attrs.field(default=4 * 1_048_576, validator=_non_negative)
    #: Protocol errors in a row before the connection is closed with 4000.
    max_errors: int = attrs.field(default=10, validator=_positive)
    #: Messages that may wait in one connection's outbound queue.
    send_queue_size: int = attrs.field(default=1024, validator=_positive)
    #: Bytes that may wait in one connection's outbound queue.
    send_queue_bytes: int = attrs.field(default=8 * 1_048_576, validator=_positive)
    #: Count what the bus does and serve it at ``GET /metrics`` (Prometheus).
    metrics: bool = True
    #: Serve ``/metrics``, ``/health`` and ``/live`` on this port of the same host,
    #: apart from the bus's clients (``/metrics`` then leaves the bus's port; 0
    #: picks a free port); ``None``: on the bus's port only.
    metrics_port: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(_non_negative))
    #: Seconds the adapter may stay disconnected (Redis down) before ``/health``
    #: answers 503; ``/live`` answers 200 all the same.
    health_grace: float = attrs.field(default=10.0, validator=_non_negative)
    #: Open connections (handshakes in progress included) above which new ones are
    #: answered HTTP 503; ``None``: what the file descriptor limit allows, less a
    #: tenth of it (at least 32) kept free.
    max_connections: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(_positive))
    #: Seconds a client has to complete the HTTP handshake.
    handshake_timeout: float = attrs.field(default=10.0, validator=_positive)
    #: Seconds to wait for the client's close frame after the server sent its own.
    close_timeout: float = attrs.field(default=2.0, validator=_positive)
    #: Seconds running handlers get to finish when the server shuts down.
    drain_timeout: float = attrs.field(default=10.0, validator=_non_negative)
    #: Seconds a server call waits for the client's answer unless told otherwise.
    call_timeout: float = attrs.field(default=10.0, validator=_positive)
    #: Messages a room's history keeps, for clients that resume (PROTOCOL.md section
    #: 9.3); 0: rooms keep no history unless a ``history_rooms`` rule says so.
    history_size: int = attrs.field(default=1000, validator=_non_negative)
    #: Seconds a message stays in its room's history at most.
    history_age: float = attrs.field(default=120.0, validator=_positive)
    #: Bytes a room's history holds at most (each message counted as the adapter
    #: measures it: in memory, its data in msgpack plus its event name and 16; in
    #: Redis, the whole message as stored).
    history_bytes: int = attrs.field(default=1_048_576, validator=_positive)
    #: History rules by room name, first match wins: ``PATTERN=off``, or
    #: ``PATTERN=SIZE/AGE[/BYTES]`` (``game.*=off``, ``audit.*=10000/3600``); a room
    #: no rule matches keeps the history above.
    history_rooms: Sequence[str] = attrs.field(default=(), converter=tuple,
                                               validator=_history_rules)
    #: Most messages one room replays to a resuming client; further behind, it is
    #: told ``too_far_behind`` instead.
    max_replay: int = attrs.field(default=10_000, validator=_positive)
    #: Seconds a resume token is valid after it was issued; a connection gets a
    #: fresh one (the ``$resume_token`` event) when half of that has passed.
    resume_ttl: float = attrs.field(default=86400.0, validator=_positive)
    #: The secret resume tokens are signed with, the same on every node of the bus.
    #: ``None``: with Redis, one the nodes keep there; alone, a new one per process
    #: (a restart then answers every RESUME with ``resume_failed``).
    secret: str | None = attrs.field(default=None, repr=False)
    #: Origins of the pages allowed to open connections, such as
    #: ``["https://app.example"]``; ``["*"]`` allows any page. ``None`` (the
    #: default) allows only pages of the bus's own origin (the ``Origin`` names the
    #: ``Host`` the request is for). Requests without an ``Origin`` header
    #: (non-browser clients) are always allowed.
    allowed_origins: Sequence[str] | None = attrs.field(
        default=None, converter=attrs.converters.optional(tuple)
    )

    def welcome_options(self) -> WelcomeOptions:
        """The settings every client is told in its welcome (times in ms)."""
        return WelcomeOptions(
            ping_interval=round(self.ping_interval * 1000),
            ping_timeout=round(self.ping_timeout * 1000),
            max_frame=self.max_frame,
            max_name=self.max_name,
            max_rooms=self.max_rooms,
            max_pending=self.max_pending,
            rate=self.rate,
            burst=self.burst,
            max_elements=self.max_elements,
        )
