"""Braze's rate limit as backpressure: what this container last learnt of the workspace's window.

Braze answers `X-RateLimit-Limit`, `-Remaining` and `-Reset` on every `/users/track` request, and the window is
the workspace's, shared by every container of ours and every other integration of the customer's: each answer is
a fresh reading of one shared signal, at no cost. From it:

- the webhook hands events to the batched worker (one request per 50 users) instead of calling Braze one user per
  request, once less than `sync_reserve` of the window is left, until the window resets. Three quarters: the
  webhook's readings are up to a Braze call old, one per container, and the other integrations keep spending the
  window meanwhile; stopping the synchronous calls once a quarter is spent leaves the batched worker room to send
  its requests inside the same window instead of meeting 429s (README "Braze's rate limit");
- the worker sends nothing more once the window is spent, and waits for the reset rather than collect 429s.

A reading older than its window's reset says nothing about the next window: the synchronous path resumes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .braze import RATE_LIMITED, BrazeOutcome, RateWindow


@dataclass
class RateGauge:
    sync_reserve: float = 0.75  # the share of a window the webhook leaves to the batched worker
    window: RateWindow | None = None

    def observe(self, outcome: BrazeOutcome, now: float) -> None:
        if outcome.window is not None:
            self.window = outcome.window
        if outcome.kind == RATE_LIMITED:
            limit = self.window.limit if self.window else 0
            self.window = RateWindow(limit, 0, outcome.retry_at or (self.window.reset if self.window else now + 1))

    def hand_off_until(self, now: float) -> float | None:
        """While Braze is limiting: the time the window resets, before which the webhook should queue, not call."""
        window = self.window
        if window is None or window.reset <= now:
            return None
        return window.reset if window.remaining <= math.ceil(window.limit * self.sync_reserve) else None

    def spent_until(self, now: float) -> float | None:
        """The window is spent: nothing more is sent before this time."""
        window = self.window
        if window is None or window.reset <= now or window.remaining > 0:
            return None
        return window.reset
