"""The retry schedule: the delay before each retry of a failed Braze call."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import ConfigurationError

DEFAULT_DELAYS = "30,45,60,75,90"
MIN_RETRIES = 5  # Didomi's promise: at least five retries within five minutes
MAX_RETRIES = 9  # the retry queue's maxReceiveCount (10) must stay above the number of retries
MAX_DELAY_SECONDS = 900  # SQS DelaySeconds limit; also keeps every retry inside the message's lifetime


@dataclass(frozen=True)
class RetrySchedule:
    """Delays before each retry: `delays[0]` after the first failure, `delays[k]` after retry k failed."""

    delays: tuple[int, ...]

    @classmethod
    def parse(cls, text: str | None) -> RetrySchedule:
        raw = DEFAULT_DELAYS if text is None or not text.strip() else text
        try:
            delays = tuple(int(part) for part in raw.split(","))
        except ValueError:
            raise ConfigurationError(
                f"RETRY_DELAYS_SECONDS must be comma-separated whole seconds, such as {DEFAULT_DELAYS}"
            ) from None
        if not MIN_RETRIES <= len(delays) <= MAX_RETRIES:
            raise ConfigurationError(
                f"RETRY_DELAYS_SECONDS needs {MIN_RETRIES} to {MAX_RETRIES} delays (one per retry), got {len(delays)}"
            )
        if any(d < 1 or d > MAX_DELAY_SECONDS for d in delays):
            raise ConfigurationError(f"each RETRY_DELAYS_SECONDS delay must be between 1 and {MAX_DELAY_SECONDS} seconds")
        return cls(delays)

    @property
    def retries(self) -> int:
        return len(self.delays)

    def first_delay(self, now: float, retry_at: float | None = None) -> int:
        return self._at_least(self.delays[0], now, retry_at)

    def delay_after(self, attempt: int, now: float, retry_at: float | None = None) -> int | None:
        """Delay before the next retry once retry number `attempt` (1-based) failed; None when none is left."""
        if attempt >= self.retries:
            return None
        return self._at_least(self.delays[attempt], now, retry_at)

    @staticmethod
    def _at_least(delay: int, now: float, retry_at: float | None) -> int:
        if retry_at is not None:
            delay = max(delay, math.ceil(retry_at - now))
        return min(delay, MAX_DELAY_SECONDS)
