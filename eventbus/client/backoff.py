"""How long a client waits between reconnection attempts.

Exponential backoff with full jitter (the wait is drawn uniformly between zero and
the exponential ceiling), as protocol/PROTOCOL.md section 14 recommends: many
clients cut off by one server restart then spread their attempts over time
instead of arriving together.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import attrs

__all__ = ["Backoff"]


def _positive(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be positive, not {value!r}")


def _at_least_one(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if value < 1:
        raise ValueError(f"{attribute.name} must be at least 1, not {value!r}")


def _attempts(_: object, attribute: attrs.Attribute[int | None], value: int | None) -> None:
    if value is not None and value < 1:
        raise ValueError(f"{attribute.name} must be at least 1 or None, not {value!r}")


@attrs.frozen(kw_only=True)
class Backoff:
    """The reconnection policy of a client; times are in seconds.

    Attempt ``n`` (counting from 0) waits a random time between 0 and
    ``min(cap, initial * factor ** n)``. The count starts again from 0 once a
    connection has stayed up for ``reset_after`` seconds, so a server that accepts
    connections and drops them at once is not hammered in a tight loop.

    Attributes:
        initial: The ceiling of the first wait.
        factor: How much the ceiling grows with each failed attempt.
        cap: The largest ceiling.
        reset_after: How long a connection must last to reset the count.
        max_attempts: Give up after this many failed attempts in a row
            (``None``: never give up).

    .. versionadded:: 0.1.0
    """

    initial: float = attrs.field(default=0.5, validator=_positive)
    factor: float = attrs.field(default=2.0, validator=_at_least_one)
    cap: float = attrs.field(default=30.0, validator=_positive)
    reset_after: float = attrs.field(default=10.0, validator=_positive)
    max_attempts: int | None = attrs.field(default=None, validator=_attempts)

    def ceiling(self, attempt: int) -> float:
        """The largest wait before attempt ``attempt`` (0 for the first retry)."""
        # min() before the power would overflow: 2.0 ** 5000 is an OverflowError.
        if attempt >= 64:
            return self.cap
        return min(self.cap, self.initial * self.factor**attempt)

    def delay(
        self, attempt: int, uniform: Callable[[float, float], float] = random.uniform
    ) -> float:
        """The wait before attempt ``attempt``: uniform in ``[0, ceiling(attempt)]``.

        Args:
            attempt: How many attempts failed in a row before this one.
            uniform: The random source, replaceable for tests.
        """
        return uniform(0.0, self.ceiling(attempt))

    def gives_up(self, failures: int) -> bool:
        """Whether ``failures`` failed attempts in a row are enough to stop."""
        return self.max_attempts is not None and failures >= self.max_attempts
