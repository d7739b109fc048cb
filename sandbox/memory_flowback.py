"""In-memory stand-ins for the flow back's outside world (Braze → Didomi), on the caller's clock, like memory.py's:
Currents files (real Avro bytes), the ledger of handled events, and Didomi's organisation reached through the real
Didomi client without a socket. `tests/integration/test_flowback_doubles.py` holds them to the real adapters."""

from __future__ import annotations

import io
import json
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping

from didomi_braze.adapters.currents_files import decode_avro
from didomi_braze.adapters.didomi_api import DidomiClient, TransportError
from didomi_braze.domain.didomi_api import DIDOMI_API_URL, DidomiCredentials
from didomi_braze.domain.errors import FileUnavailable, StateUnavailable, UnreadableFile
from didomi_braze.service.dependencies import Dependencies
from didomi_braze.service.flowback import DEADLINE_MARGIN_SECONDS, FlowBack, IngestRecord, ingest_batch

from .didomi_emulator import DidomiOrganization
from .memory import Clock, MemoryQueues, MemoryStateStore

LEDGER_TTL_SECONDS = 30 * 24 * 3600


class MemoryDidomiTransport:
    """The Didomi client's transport over an organisation without a socket. A hang costs the client's whole
    timeout on the clock, then times out (the change was applied: the worst case)."""

    def __init__(self, organization: DidomiOrganization, clock: Clock, timeout_seconds: float = 12.0):
        self.organization, self.clock, self.timeout_seconds = organization, clock, timeout_seconds

    def __call__(self, method: str, url: str, headers: Mapping[str, str], body: bytes | None):
        parts = urllib.parse.urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        _, answer = self.organization.receive(method, target, dict(headers), body or b"")
        if answer.hang:
            self.clock.advance(self.timeout_seconds)
            raise TransportError("timed out")
        return answer.status, answer.headers, json.dumps(answer.body).encode()


def memory_didomi(organization: DidomiOrganization, clock: Clock) -> DidomiClient:
    """The real Didomi client, talking to the organisation in memory with its own credentials."""
    credentials = DidomiCredentials(organization.api_key, organization.api_secret, organization.organization_id)
    return DidomiClient(lambda force: credentials, DIDOMI_API_URL, MemoryDidomiTransport(organization, clock), clock=clock)


class MemoryCurrentsFiles:
    """S3 objects holding Avro bytes, decoded by the adapter's own `decode_avro`."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}
        self.fail: Callable[[str], bool] = lambda key: False  # fault injection: True → S3 unreachable for this read
        self.reads = 0

    def put(self, bucket: str, key: str, data: bytes) -> None:
        self.objects[(bucket, key)] = data

    def records(self, bucket: str, key: str) -> Iterator[dict]:
        self.reads += 1
        if self.fail(key):
            raise FileUnavailable("cannot read the file from S3 (SlowDown)")
        if (bucket, key) not in self.objects:
            raise UnreadableFile("the file is gone (NoSuchKey): it was deleted before it could be read")
        return decode_avro(io.BytesIO(self.objects[(bucket, key)]))


class MemoryEventLedger:
    """The `EventLedger` port: keys with an expiry on the clock, like the DynamoDB items and their TTL."""

    def __init__(self, clock: Clock):
        self.clock = clock
        self.items: dict[str, float] = {}
        self.fail: Callable[[str], bool] = lambda operation: False

    def handled(self, keys: Iterable[str]) -> set[str]:
        if self.fail("handled"):
            raise StateUnavailable("ProvisionedThroughputExceededException: injected")
        now = self.clock()
        return {k for k in keys if self.items.get(k, 0) > now}

    def record(self, keys: Iterable[str], now: float) -> None:
        if self.fail("record"):
            raise StateUnavailable("ProvisionedThroughputExceededException: injected")
        for key in keys:
            self.items[key] = int(now) + LEDGER_TTL_SECONDS


def memory_flow_back(
    deps: Dependencies,
    state: MemoryStateStore,
    organization: DidomiOrganization,
    files: MemoryCurrentsFiles,
    ledger: MemoryEventLedger,
    queues: MemoryQueues,
    clock: Clock,
    opt_ins: bool = False,
) -> FlowBack:
    """IngestFunction's flow-back dependencies over in-memory ports, wired as `runtime.flow_back` wires the real ones."""
    return FlowBack(
        didomi=memory_didomi(organization, clock),
        files=files,
        state=state,
        ledger=ledger,
        queue=queues,
        schedule=deps.schedule,
        opt_ins=opt_ins,
        concurrency=1,  # deterministic
    )


class MemoryIngestWorker:
    """Lambda's SQS event source over the ingest queue, one invocation per `poll`."""

    def __init__(
        self, deps: Dependencies, flow: FlowBack, queues: MemoryQueues, clock: Clock, batch_size: int = 5, timeout: int = 300
    ):
        self.deps, self.flow, self.queues, self.clock = deps, flow, queues, clock
        self.batch_size, self.timeout = batch_size, timeout
        self.invocations = 0
        self.last_failures: list[str] = []

    def notify(self, bucket: str, keys: Iterable[str]) -> None:
        """What S3 sends the ingest queue for each object created."""
        for key in keys:
            record = {
                "eventName": "ObjectCreated:Put",
                "s3": {"bucket": {"name": bucket}, "object": {"key": urllib.parse.quote_plus(key)}},
            }
            self.queues.retries.send(json.dumps({"Records": [record]}))

    def poll(self) -> int:
        messages = self.queues.retries.receive(self.batch_size)
        if not messages:
            return 0
        self.invocations += 1
        records = [IngestRecord(m.id, m.receipt or "", m.body, m.receive_count, m.first_received_at) for m in messages]
        deadline = self.clock() + self.timeout - DEADLINE_MARGIN_SECONDS
        self.last_failures = ingest_batch(records, self.deps, self.flow, deadline)
        for message in messages:
            if message.id not in self.last_failures:
                self.queues.retries.delete(message.receipt or "")
        return len(messages)
