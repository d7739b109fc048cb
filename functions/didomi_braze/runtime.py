"""Builds the container's dependencies from the environment, once per container.

Handlers call `prepare()` at import, so that the SDK clients are created in Lambda's init phase (which runs with
a full CPU) rather than in the first invocation. A configuration problem does not fail the init: it is raised
again, with its message, by every call to `dependencies()`, and each request answers 503 naming it in the log.

The SDK clients come from one botocore session per process, as `boto3.client(...)` makes them from boto3's
default session; but `import boto3` also loads s3transfer and with it multiprocessing, about 30 ms of the cold
start spent on modules no function uses.

The settings come from the process environment, which Lambda sets per function. A host that runs several functions
in one process (the local stack) runs each one's calls inside `function_environment(...)`, so that each function
gets its own settings and its own dependencies, as it would in its own container.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import time
from collections import ChainMap
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from functools import lru_cache
from typing import TYPE_CHECKING

import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError

from .adapters.backfill_runs import BackfillRunTable
from .adapters.braze_client import BrazeClient
from .adapters.queues import Queues
from .adapters.secrets import ConnectorSource, SecretStore, WebhookTokens
from .adapters.state_table import StateTable
from .domain.access import AccessPolicy
from .domain.braze import DEFAULT_OBJECTS_PER_REQUEST, MAX_OBJECTS_PER_REQUEST
from .domain.errors import ConfigurationError
from .domain.schedule import RetrySchedule
from .service.delivery import LEASE_MARGIN_SECONDS, Delivery
from .service.dependencies import Dependencies

if TYPE_CHECKING:
    from .service.flowback import FlowBack

SECRET_MAX_AGE_SECONDS = 300


_function_environment: ContextVar[tuple[tuple[str, str], ...] | None] = ContextVar("function_environment", default=None)


@contextlib.contextmanager
def function_environment(variables: Mapping[str, str]) -> Iterator[None]:
    """Calls to `dependencies()` made inside (in this thread or task) see these variables over the process's."""
    token = _function_environment.set(tuple(sorted(variables.items())))
    try:
        yield
    finally:
        _function_environment.reset(token)


def prepare() -> None:
    """Build the dependencies now if the environment allows; otherwise leave the error to the first request."""
    try:
        dependencies()
    except ConfigurationError:
        pass
    # Everything built so far lives as long as the container: keep it out of the garbage collector's passes.
    gc.freeze()


def dependencies() -> Dependencies:
    return _built(_function_environment.get())


@lru_cache(maxsize=1)
def _session() -> botocore.session.Session:
    """The process's botocore session, created on first use (its settings come from the environment then)."""
    return botocore.session.get_session()


def _client(service: str, config: Config):
    return _session().create_client(service, config=config)


@lru_cache(maxsize=4)  # a raised ConfigurationError is not cached: each call reports it again
def _built(overlay: tuple[tuple[str, str], ...] | None) -> Dependencies:
    env = _Environment(ChainMap(dict(overlay), os.environ) if overlay is not None else os.environ)
    aws = Config(connect_timeout=2, read_timeout=5, retries={"mode": "standard", "max_attempts": 3})
    try:
        secretsmanager = _client("secretsmanager", config=aws)
        # Our adapters build every request themselves: client-side validation of them is CPU spent on every call.
        dynamodb = _client("dynamodb", config=aws.merge(Config(max_pool_connections=16, parameter_validation=False)))
    except BotoCoreError as exc:  # no region, say: Lambda always sets one, a local shell may not
        raise ConfigurationError(f"cannot create the AWS clients: {exc}") from None
    store = SecretStore(secretsmanager, max_age=SECRET_MAX_AGE_SECONDS)
    connector_source = ConnectorSource(store, env.required("CONNECTOR_SECRET_ID"), env.flag("BRAZE_ALLOW_LOOPBACK"))
    connect_timeout = env.number("BRAZE_CONNECT_TIMEOUT_SECONDS", 2.0)
    read_timeout = env.number("BRAZE_READ_TIMEOUT_SECONDS", 5.0)
    braze_seconds = connect_timeout + read_timeout
    delivery = Delivery(
        state=StateTable(dynamodb, env.required("STATE_TABLE_NAME")),
        braze=BrazeClient(connect_timeout=connect_timeout, read_timeout=read_timeout),
        load_config=lambda force: connector_source.load(force=force),
        clock=lambda: time.time(),
        objects_per_request=env.objects_per_request(),
        braze_seconds=braze_seconds,
    )
    deps = Dependencies(
        connector_source=connector_source,
        webhook_tokens=WebhookTokens(
            secretsmanager,
            env.required("WEBHOOK_SECRET_ID"),
            max_age=SECRET_MAX_AGE_SECONDS,
            grace_seconds=int(env.number("WEBHOOK_TOKEN_GRACE_HOURS", 24) * 3600),
        ),
        access=AccessPolicy.parse(env.get("AUTH_MODE"), env.get("ALLOWED_SOURCE_CIDRS"), env.get("OAUTH_SCOPE")),
        delivery=delivery,
        queue=Queues(lambda: _client("sqs", config=aws), env.required("RETRY_QUEUE_URL"), env.required("DEAD_LETTER_QUEUE_URL")),
        schedule=RetrySchedule.parse(env.get("RETRY_DELAYS_SECONDS")),
        webhook_lease_seconds=math.ceil(braze_seconds) + LEASE_MARGIN_SECONDS,
        backfill_runs=BackfillRunTable(dynamodb, env.get("STATE_TABLE_NAME") or ""),
    )
    env.raise_problems()
    return deps


dependencies.cache_clear = _built.cache_clear  # a new container: tests and the local stack start afresh


def prepare_flow_back() -> None:
    """IngestFunction's init phase: the forward path's dependencies and the flow back's."""
    try:
        dependencies()
        flow_back()
    except ConfigurationError:
        pass
    gc.freeze()  # as prepare() does


def flow_back() -> FlowBack:
    """IngestFunction's own dependencies: Didomi's API, the Currents files, the ledger and the ingest queues.
    Imported here, so that the other functions' cold start does not load the Avro reader."""
    return _built_flow_back(_function_environment.get())


@lru_cache(maxsize=4)
def _built_flow_back(overlay: tuple[tuple[str, str], ...] | None) -> FlowBack:
    from .adapters.currents_files import S3CurrentsFiles
    from .adapters.didomi_api import DidomiClient, DidomiCredentialsSource, Urllib3Transport
    from .adapters.event_ledger import DynamoEventLedger
    from .domain.didomi_api import didomi_base_url
    from .service.flowback import FlowBack

    env = _Environment(ChainMap(dict(overlay), os.environ) if overlay is not None else os.environ)
    aws = Config(connect_timeout=2, read_timeout=5, retries={"mode": "standard", "max_attempts": 3})
    try:
        secretsmanager = _client("secretsmanager", config=aws)
        dynamodb = _client("dynamodb", config=aws)
        s3 = _client("s3", config=Config(connect_timeout=2, read_timeout=30, retries={"mode": "standard"}))
        sqs = _client("sqs", config=aws)
    except BotoCoreError as exc:
        raise ConfigurationError(f"cannot create the AWS clients: {exc}") from None
    credentials = DidomiCredentialsSource(
        SecretStore(secretsmanager, max_age=SECRET_MAX_AGE_SECONDS), env.required("DIDOMI_SECRET_ID")
    )
    try:
        base_url = didomi_base_url(env.get("DIDOMI_API_URL"), env.flag("DIDOMI_ALLOW_LOOPBACK"))
    except ConfigurationError as exc:
        env.problems.extend(exc.problems)
        base_url = ""
    table = env.required("STATE_TABLE_NAME")
    transport = Urllib3Transport(
        connect_timeout=env.number("DIDOMI_CONNECT_TIMEOUT_SECONDS", 2.0),
        read_timeout=env.number("DIDOMI_READ_TIMEOUT_SECONDS", 10.0),
    )
    flow = FlowBack(
        didomi=DidomiClient(lambda force: credentials.load(force=force), base_url, transport, clock=lambda: time.time()),
        files=S3CurrentsFiles(s3),
        state=StateTable(dynamodb, table),
        ledger=DynamoEventLedger(dynamodb, table),
        queue=Queues(lambda: sqs, env.required("INGEST_QUEUE_URL"), env.required("INGEST_DEAD_LETTER_QUEUE_URL")),
        schedule=RetrySchedule.parse(env.get("RETRY_DELAYS_SECONDS")),
        opt_ins=env.flag("CURRENTS_OPT_INS"),
    )
    env.raise_problems()
    return flow


flow_back.cache_clear = _built_flow_back.cache_clear


class _Environment:
    """Reads settings and collects every problem, so one error message lists all that is missing."""

    def __init__(self, source: Mapping[str, str]) -> None:
        self.source = source
        self.problems: list[str] = []

    def get(self, name: str) -> str | None:
        return self.source.get(name)

    def required(self, name: str) -> str:
        value = self.source.get(name, "").strip()
        if not value:
            self.problems.append(f"environment variable {name} is not set")
        return value

    def flag(self, name: str) -> bool:
        return self.source.get(name, "").strip().lower() == "true"

    def number(self, name: str, default: float) -> float:
        raw = self.source.get(name)
        try:
            value = float(raw) if raw else default
        except ValueError:
            value = 0.0
        if value <= 0:
            self.problems.append(f"{name} must be a positive number of seconds")
            return default
        return value

    def objects_per_request(self) -> int:
        raw = self.source.get("BRAZE_OBJECTS_PER_REQUEST")
        if not raw:
            return DEFAULT_OBJECTS_PER_REQUEST
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_OBJECTS_PER_REQUEST:
            self.problems.append(f"BRAZE_OBJECTS_PER_REQUEST must be a whole number from 1 to {MAX_OBJECTS_PER_REQUEST}")
            return DEFAULT_OBJECTS_PER_REQUEST
        return int(raw)

    def raise_problems(self) -> None:
        if self.problems:
            raise ConfigurationError(self.problems)
