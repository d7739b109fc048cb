"""Builds the container's dependencies from the environment, once, on first use (not at import)."""

from __future__ import annotations

import os
from functools import lru_cache

from .domain.braze import DEFAULT_OBJECTS_PER_REQUEST, MAX_OBJECTS_PER_REQUEST
from .domain.errors import ConfigurationError
from .domain.retry import RetrySchedule
from .service.dependencies import Dependencies

SECRET_MAX_AGE_SECONDS = 300


@lru_cache(maxsize=1)
def dependencies() -> Dependencies:
    import boto3  # imported here so that a bad request is answered before boto3 is loaded
    from botocore.config import Config

    from .adapters.braze_client import BrazeClient
    from .adapters.queues import Queues
    from .adapters.secrets import ConnectorSource, SecretStore
    from .adapters.state_table import StateTable

    env = _Environment()
    aws = Config(connect_timeout=2, read_timeout=5, retries={"mode": "standard", "max_attempts": 3})
    store = SecretStore(boto3.client("secretsmanager", config=aws), max_age=SECRET_MAX_AGE_SECONDS)
    deps = Dependencies(
        secrets=store,
        connector_source=ConnectorSource(store, env.required("CONNECTOR_SECRET_ID"), env.flag("BRAZE_ALLOW_LOOPBACK")),
        webhook_secret_id=env.required("WEBHOOK_SECRET_ID"),
        braze=BrazeClient(
            connect_timeout=env.number("BRAZE_CONNECT_TIMEOUT_SECONDS", 2.0),
            read_timeout=env.number("BRAZE_READ_TIMEOUT_SECONDS", 5.0),
        ),
        queues=Queues(boto3.client("sqs", config=aws), env.required("RETRY_QUEUE_URL"), env.required("DEAD_LETTER_QUEUE_URL")),
        state=StateTable(boto3.client("dynamodb", config=aws), env.required("STATE_TABLE_NAME")),
        schedule=RetrySchedule.parse(os.environ.get("RETRY_DELAYS_SECONDS")),
        objects_per_request=env.objects_per_request(),
    )
    env.raise_problems()
    return deps


class _Environment:
    """Reads settings and collects every problem, so one error message lists all that is missing."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def required(self, name: str) -> str:
        value = os.environ.get(name, "").strip()
        if not value:
            self.problems.append(f"environment variable {name} is not set")
        return value

    @staticmethod
    def flag(name: str) -> bool:
        return os.environ.get(name, "").strip().lower() == "true"

    def number(self, name: str, default: float) -> float:
        raw = os.environ.get(name)
        try:
            value = float(raw) if raw else default
        except ValueError:
            value = 0.0
        if value <= 0:
            self.problems.append(f"{name} must be a positive number of seconds")
            return default
        return value

    def objects_per_request(self) -> int:
        raw = os.environ.get("BRAZE_OBJECTS_PER_REQUEST")
        if not raw:
            return DEFAULT_OBJECTS_PER_REQUEST
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_OBJECTS_PER_REQUEST:
            self.problems.append(f"BRAZE_OBJECTS_PER_REQUEST must be a whole number from 1 to {MAX_OBJECTS_PER_REQUEST}")
            return DEFAULT_OBJECTS_PER_REQUEST
        return int(raw)

    def raise_problems(self) -> None:
        if self.problems:
            raise ConfigurationError(self.problems)
