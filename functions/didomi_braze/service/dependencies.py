"""What the use cases need from the outside world, as one object built once per container."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..domain.errors import ConfigurationError
from ..observability import user_ref

if TYPE_CHECKING:
    from ..adapters.secrets import ConnectorSource, WebhookTokens
    from ..domain.access import AccessPolicy
    from ..domain.backfill import BackfillRuns
    from ..domain.connector import ConnectorConfig
    from ..domain.ports import RetryQueue
    from ..domain.schedule import RetrySchedule
    from .delivery import Delivery


@dataclass
class Dependencies:
    connector_source: ConnectorSource
    webhook_tokens: WebhookTokens
    access: AccessPolicy
    delivery: Delivery
    queue: RetryQueue
    schedule: RetrySchedule
    webhook_lease_seconds: float  # the webhook's lease: its one Braze call and a margin
    clock: Callable[[], float] = field(default=lambda: time.time())  # looked up per call: tests move the clock
    backfill_runs: BackfillRuns | None = None  # the worker counts each backfill run's settled messages
    rng: random.Random = field(default_factory=random.Random)  # jitter; seeded where a run must repeat

    def connector(self, force: bool = False) -> ConnectorConfig:
        return self.connector_source.load(force=force)

    def user_ref(self, identity_key: str) -> str:
        """A keyed hash of the user for logs (keyed with the webhook secret, so it cannot be guessed)."""
        try:
            return user_ref(self.webhook_tokens.valid()[0], identity_key)
        except ConfigurationError:
            return "unavailable"
