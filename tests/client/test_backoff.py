"""The reconnection backoff: exponential ceiling, full jitter, cap, giving up."""

from __future__ import annotations

import pytest

from eventbus import Backoff


def test_ceiling_grows_exponentially_up_to_the_cap() -> None:
    backoff = Backoff()  # 0.5 s, x2, capped at 30 s
    assert [backoff.ceiling(n) for n in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert backoff.ceiling(10_000) == 30


def test_delay_is_full_jitter_below_the_ceiling() -> None:
    backoff = Backoff(initial=1, factor=3, cap=100)
    assert backoff.delay(2, uniform=lambda low, high: high) == 9
    assert backoff.delay(2, uniform=lambda low, high: low) == 0
    for attempt in range(20):
        assert 0 <= backoff.delay(attempt) <= backoff.ceiling(attempt)


def test_gives_up_only_with_max_attempts() -> None:
    assert not Backoff().gives_up(10**6)
    assert not Backoff(max_attempts=3).gives_up(2)
    assert Backoff(max_attempts=3).gives_up(3)


@pytest.mark.parametrize(
    "settings",
    [{"initial": 0}, {"factor": 0.5}, {"cap": -1}, {"reset_after": 0}, {"max_attempts": 0}],
)
def test_bad_settings_are_refused(settings: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        Backoff(**settings)  # type: ignore[arg-type]
