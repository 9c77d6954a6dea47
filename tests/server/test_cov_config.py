"""The checks on a bus's settings and handlers: a setting out of range and a handler
that cannot be one are refused when the bus is built, naming what is wrong.

No I/O: these build values and look at the errors.
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from eventbus import Connection, EventBus, ServerConfig
from eventbus.server.handlers import make_handler


@pytest.mark.parametrize(
    ("setting", "value", "says"),
    [
        ("ping_interval", 0, "ping_interval must be positive, not 0"),
        ("max_pending", -1, "max_pending must be positive"),
        ("rate", -1, "rate must not be negative, not -1"),
        ("drain_timeout", -0.5, "drain_timeout must not be negative"),
        ("max_name", 0, "max_name must be 1 to"),
        ("max_name", 10_000, "max_name must be 1 to"),
    ],
)
def test_a_setting_out_of_range_is_refused(setting: str, value: float, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        ServerConfig(**{setting: value})


def test_zero_is_a_valid_rate_and_drain_timeout() -> None:
    config = ServerConfig(rate=0, burst=0, drain_timeout=0)
    assert (config.rate, config.burst, config.drain_timeout) == (0, 0, 0)


def test_a_handler_must_be_callable() -> None:
    bus = EventBus()
    with pytest.raises(TypeError, match="must be a function"):
        bus.on("echo")("not a function")  # type: ignore[type-var]


def test_a_handler_needs_a_concurrency_of_one_or_more() -> None:
    bus = EventBus()

    async def echo(sock: Connection, data: Any) -> Any:
        return data

    with pytest.raises(ValueError, match="concurrency must be at least 1"):
        bus.on("echo", concurrency=0)(echo)


@attrs.frozen
class Point:
    x: int
    y: int


def test_the_payload_class_comes_from_the_second_parameter() -> None:
    async def move(sock: Connection, point: Point) -> None:
        pass

    assert make_handler(move).payload_type is Point


def test_a_handler_of_fewer_than_two_parameters_takes_plain_data() -> None:
    async def ping(sock: Connection) -> None:
        pass

    assert make_handler(ping).payload_type is None


def test_an_unresolvable_annotation_means_plain_data() -> None:
    async def move(sock: Connection, point: NoSuchClass) -> None:  # type: ignore[name-defined]  # noqa: F821
        pass

    handler = make_handler(move)
    assert handler.payload_type is None
    assert handler.structure("move", {"x": 1}) == {"x": 1}
