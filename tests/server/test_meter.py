"""The token bucket and receive budget of a connection, without sockets or a clock."""

from __future__ import annotations

from eventbus.server.meter import FRAME_COST, Meter


def test_tokens_refill_at_the_rate_up_to_the_burst() -> None:
    meter = Meter(rate=10, burst=5, tokens=5, receive_rate=0, receive_burst=0, now=0.0)
    assert meter.metered
    assert all(meter.take(1.0, 0.0) for _ in range(5))
    assert not meter.take(1.0, 0.0)
    assert meter.take(1.0, 0.1)  # 0.1 s at 10/s: one token
    assert not meter.take(1.0, 0.1)
    assert sum(meter.take(1.0, 100.0) for _ in range(10)) == 5  # never more than the burst


def test_work_charged_after_the_fact_is_a_debt_bounded_by_the_burst() -> None:
    meter = Meter(rate=10, burst=5, tokens=5, receive_rate=0, receive_burst=0, now=0.0)
    meter.charge_values(10_000)  # 100 tokens of work already done
    assert not meter.take(1.0, 0.0)
    # The debt stops at -burst: 0.6 s (6 tokens) later there is one again.
    assert not meter.take(1.0, 0.5)
    assert meter.take(1.0, 1.1)  # 6 tokens back, capped at 5, one spent: 4 left
    meter.charge_values(99)  # under 100 values: no extra cost
    meter.charge(FRAME_COST * 16)  # 16 extra frames: one token
    assert sum(meter.take(1.0, 1.1) for _ in range(5)) == 3


def test_reads_wait_once_over_the_receive_rate() -> None:
    meter = Meter(rate=0, burst=0, tokens=0, receive_rate=1000, receive_burst=500, now=0.0)
    assert not meter.metered
    assert meter.received(500, 0.0) == 0.0  # the burst
    assert meter.received(250, 0.0) == 0.25  # 250 bytes over at 1000/s
    assert meter.received(0, 0.25) == 0.0
    unpaced = Meter(rate=0, burst=0, tokens=0, receive_rate=0, receive_burst=0, now=0.0)
    assert unpaced.received(10**9, 0.0) == 0.0
