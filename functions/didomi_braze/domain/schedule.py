"""The retry schedule: the delay before each retry of a failed Braze call."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from .errors import ConfigurationError

# Five retries, the fifth 270 s after the first failure: the batching window (5 s) and polling add up to 30 s more
# at worst, so the fifth retry still runs within Didomi's five minutes.
DEFAULT_DELAYS = "30,45,55,65,75"
MIN_RETRIES = 5  # Didomi's promise: at least five retries within five minutes
MAX_RETRIES = 9  # the retry queue's maxReceiveCount (10) must stay above the number of retries
MAX_DELAY_SECONDS = 900  # SQS DelaySeconds limit; also keeps every retry inside the message's lifetime
BUSY_RELOOK_SECONDS = (2, 5)  # a change that found the user's lease held looks again after this long, jittered


@dataclass(frozen=True)
class RetrySchedule:
    """Delays before each retry: `delays[n - 1]` after the n-th failed Braze call (the webhook's own try is the first)."""

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

    def delay_after_failure(self, failures: int) -> int | None:
        """Delay before the next retry once `failures` Braze calls have failed; None when the retries are spent."""
        if not 1 <= failures <= self.retries:
            return None
        return self.delays[failures - 1]

    def next_retry_in(self, failures: int, first_failure: float, now: float) -> int | None:
        """Seconds until the retry that follows the `failures`-th failure, counted from the first failure, so that
        time spent in failing calls (a hang lasts the whole timeout) does not push the last retry out of the five
        minutes. None when the retries are spent."""
        if not 1 <= failures <= self.retries:
            return None
        due = first_failure + sum(self.delays[:failures])
        return min(max(math.ceil(due - now), 1), MAX_DELAY_SECONDS)

    @staticmethod
    def wait_until(retry_at: float | None, now: float, at_least: int = 1) -> int:
        """Seconds to wait for Braze's `X-RateLimit-Reset` (or another invocation's lease), within SQS's 900 s."""
        delay = math.ceil(retry_at - now) if retry_at is not None else at_least
        return min(max(delay, at_least), MAX_DELAY_SECONDS)

    @classmethod
    def relook_when_busy(cls, lease_until: float | None, now: float, rng: random.Random) -> int:
        """Seconds before a change that found another invocation holding the user's lease looks again: when the
        lease runs out, or after 2-5 s (jittered) if that is sooner. A worker's lease covers its whole invocation
        (about a minute) but is given back as soon as its batch is done, usually within a second or two; waiting
        the whole lease would hold the change back for a minute for nothing. Looking too early costs only a fresh
        copy of the message: the claim decides, never the wait."""
        low, high = BUSY_RELOOK_SECONDS
        return min(cls.wait_until(lease_until, now), rng.randint(low, high))
