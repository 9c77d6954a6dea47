"""What a connection's client may cost: its token bucket and its receive budget.

Sans-IO and clock-free (the caller passes the time), so that the rules of
PROTOCOL.md section 12 live in one small place, apart from the reader that
applies them: a packet costs one token, and one more per 100 data values; a ping
one; each further frame of a message 1/16. Costs known only after the work (the
values of a decoded message, the frames of a message) are charged after it and
may leave the bucket below zero, down to ``-burst``, so that a connection always
recovers. Bytes are metered apart: past ``receive_rate`` the reader waits.
"""

from __future__ import annotations

__all__ = ["FRAME_COST", "PING_COST", "VALUES_PER_TOKEN", "Meter"]

#: The extra cost of each frame, or piece of a frame, parsed beyond a message's last.
FRAME_COST = 1 / 16
#: The cost of a ping.
PING_COST = 1.0
#: A packet costs one more token per this many data values.
VALUES_PER_TOKEN = 100


class Meter:
    """One connection's budgets.

    Args:
        rate: Tokens per second (0: no token bucket at all).
        burst: Tokens the bucket holds at most.
        tokens: Tokens it starts with.
        receive_rate: Bytes per second the reads are paced to (0: unpaced).
        receive_burst: Bytes that may be read at once above that rate.
        now: The time, in seconds, on the caller's clock.
    """

    __slots__ = ("_burst", "_rate", "_receive_at", "_receive_budget", "_receive_burst",
                 "_receive_rate", "_tokens", "_tokens_at")

    def __init__(
        self, rate: int, burst: int, tokens: float, receive_rate: int, receive_burst: int,
        now: float,
    ) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = tokens
        self._tokens_at = now
        self._receive_rate = receive_rate
        self._receive_burst = float(receive_burst)
        self._receive_budget = float(receive_burst)
        self._receive_at = now

    @property
    def metered(self) -> bool:
        """Whether there is a token bucket at all."""
        return self._rate > 0

    def take(self, cost: float, now: float) -> bool:
        """Spend ``cost`` tokens if the bucket has them; whether it had."""
        tokens = min(self._burst, self._tokens + (now - self._tokens_at) * self._rate)
        self._tokens_at = now
        if tokens < cost:
            self._tokens = max(-self._burst, tokens)
            return False
        self._tokens = tokens - cost
        return True

    def charge(self, cost: float) -> None:
        """Spend ``cost`` tokens for work already done (the bucket may go below 0)."""
        self._tokens -= cost

    def charge_values(self, values: int) -> None:
        """Charge a decoded message for the data values it held."""
        if self._rate and values >= VALUES_PER_TOKEN:
            self._tokens -= values // VALUES_PER_TOKEN

    def received(self, size: int, now: float) -> float:
        """Count ``size`` bytes read; the seconds to wait before reading again."""
        rate = self._receive_rate
        if not rate:
            return 0.0
        self._receive_budget = min(
            self._receive_burst, self._receive_budget + (now - self._receive_at) * rate) - size
        self._receive_at = now
        return -self._receive_budget / rate if self._receive_budget < 0 else 0.0
