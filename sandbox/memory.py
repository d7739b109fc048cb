"""In-memory stand-ins for DynamoDB, SQS and Braze, on a clock the caller moves.

They implement the product's ports (`didomi_braze.domain.ports`) with the semantics the product relies on, so that
property tests and simulations can run the real services through millions of steps in seconds.
`tests/integration/test_doubles_contract.py` runs the same operations against these and against the real adapters
(moto, the Braze emulator over HTTP) and requires the same results: a double that drifts fails there.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from didomi_braze.domain.access import AccessPolicy
from didomi_braze.domain.braze import TRACK_PATH, BrazeOutcome, classify_response, track_body, transport_failure
from didomi_braze.domain.connector import ConnectorConfig
from didomi_braze.domain.errors import StateUnavailable
from didomi_braze.domain.ordering import StoredInput, quietly, stored_older
from didomi_braze.domain.ports import AtRevision, Claimed, DeadLetter, Refused, StoredOlder, UserRecord
from didomi_braze.domain.schedule import RetrySchedule
from didomi_braze.service.delivery import LEASE_MARGIN_SECONDS, Delivery
from didomi_braze.service.dependencies import Dependencies
from didomi_braze.service.retry import DEADLINE_MARGIN_SECONDS, RetryRecord, retry_batch

from .braze_emulator import BrazeWorkspace


class Clock:
    """Virtual time in epoch seconds. Components read it; only the test or the simulation moves it."""

    def __init__(self, start: float = 1_800_000_000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# -- DynamoDB: the state table ---------------------------------------------------------------------------------
class MemoryStateStore:
    """The `StateStore` port with the conditions `adapters/state_table.py` writes into its `UpdateItem`s."""

    def __init__(self) -> None:
        self.items: dict[str, UserRecord] = {}
        self.fail: Callable[[str], bool] = lambda operation: False  # fault injection: True fails this call
        self.writes = 0

    def claim(
        self,
        key: str,
        inputs: Mapping[str, StoredInput],
        owner: str | None,
        event: str,
        now: float,
        lease_until: float,
        expect: StoredOlder | AtRevision,
    ) -> Claimed | Refused:
        if self.fail("claim"):
            raise StateUnavailable("ProvisionedThroughputExceededException: injected")
        self.writes += 1
        before = self.items.get(key)
        current = before or UserRecord()
        ok = True
        if owner is not None and current.lease_owner is not None and not current.lease_until < now:
            ok = False
        if isinstance(expect, StoredOlder):
            ok = ok and all(stored_older(current.inputs.get(n), s.position) for n, s in inputs.items())
        elif current.revision != expect.revision:
            ok = False
        if not ok:
            return Refused(current)
        merged = {**current.inputs, **inputs}
        if owner is None:
            after = UserRecord(merged, current.revision + 1, current.lease_owner, current.lease_until, current.lease_event)
        else:
            after = UserRecord(merged, current.revision + 1, owner, lease_until, event[:500])
        self.items[key] = after
        return Claimed(current)

    def release(self, key: str, owner: str, quiet: tuple[str, ...] = ()) -> bool:
        if self.fail("release"):
            raise StateUnavailable("ProvisionedThroughputExceededException: injected")
        self.writes += 1
        current = self.items.get(key)
        if current is None or current.lease_owner != owner or not set(quiet) <= set(current.inputs):
            return False
        inputs = {**current.inputs, **quietly({n: current.inputs[n] for n in quiet})}
        self.items[key] = UserRecord(inputs, current.revision)
        return True

    def read(self, key: str) -> UserRecord | None:
        if self.fail("read"):
            raise StateUnavailable("ProvisionedThroughputExceededException: injected")
        return self.items.get(key)


# -- SQS ---------------------------------------------------------------------------------------------------------
@dataclass
class Message:
    id: str
    body: str
    sent_at: float
    visible_at: float
    attributes: dict[str, str] = field(default_factory=dict)
    receive_count: int = 0
    first_received_at: float | None = None
    receipt: str | None = None


class MemoryQueue:
    """One SQS standard queue: DelaySeconds, visibility timeouts, receive counts, a redrive policy, retention.

    Unlike real SQS it never delivers a message twice at once and receives in send order: the product must
    not rely on either, and the fault injection (deaths, redeliveries) supplies the disorder."""

    def __init__(
        self,
        clock: Clock,
        visibility_timeout: int = 30,
        retention_seconds: int = 345_600,
        dead_letter: MemoryQueue | None = None,
        max_receive_count: int | None = None,
    ):
        self.clock = clock
        self.visibility_timeout = visibility_timeout
        self.retention_seconds = retention_seconds
        self.dead_letter = dead_letter
        self.max_receive_count = max_receive_count
        self.messages: dict[str, Message] = {}
        self.expired: list[Message] = []  # messages SQS dropped at the end of their retention: lost
        self._ids = itertools.count(1)

    def send(self, body: str, delay_seconds: int = 0, attributes: dict[str, str] | None = None) -> str:
        if not 0 <= delay_seconds <= 900:
            raise ValueError("DelaySeconds must be 0-900")
        message_id = f"m-{next(self._ids)}"
        now = self.clock()
        self.messages[message_id] = Message(message_id, body, now, now + delay_seconds, dict(attributes or {}))
        return message_id

    def receive(self, max_messages: int = 10, visibility_timeout: int | None = None) -> list[Message]:
        now = self.clock()
        self._expire(now)
        got: list[Message] = []
        for message in sorted(self.messages.values(), key=lambda m: (m.visible_at, m.id)):
            if len(got) >= max_messages or message.visible_at > now:
                break
            if self.max_receive_count is not None and message.receive_count >= self.max_receive_count:
                del self.messages[message.id]  # the redrive policy: to the dead-letter queue, as it is
                if self.dead_letter is not None:
                    self.dead_letter.send(message.body)
                continue
            message.receive_count += 1
            message.first_received_at = message.first_received_at or now
            message.visible_at = now + (self.visibility_timeout if visibility_timeout is None else visibility_timeout)
            message.receipt = f"{message.id}#{message.receive_count}"
            got.append(replace(message))
        return got

    def delete(self, receipt: str) -> None:
        message = self.messages.get(receipt.split("#")[0])
        if message is not None and message.receipt == receipt:
            del self.messages[message.id]

    def change_visibility(self, receipt: str, seconds: int) -> None:
        message = self.messages.get(receipt.split("#")[0])
        if message is None or message.receipt != receipt:
            raise ValueError("ReceiptHandleIsInvalid")
        message.visible_at = self.clock() + seconds

    def depth(self) -> int:
        self._expire(self.clock())
        return len(self.messages)

    def next_visible_at(self) -> float | None:
        return min((m.visible_at for m in self.messages.values()), default=None)

    def _expire(self, now: float) -> None:
        for message in [m for m in self.messages.values() if now - m.sent_at > self.retention_seconds]:
            self.expired.append(self.messages.pop(message.id))


class MemoryQueues:
    """The `RetryQueue` port over two memory queues, wired as the template wires RetryQueue and DeadLetterQueue."""

    def __init__(self, clock: Clock, visibility_timeout: int = 360, max_receive_count: int = 10):
        self.dead_letters = MemoryQueue(clock, retention_seconds=1_209_600)
        self.retries = MemoryQueue(clock, visibility_timeout, dead_letter=self.dead_letters, max_receive_count=max_receive_count)
        self.fail: Callable[[str], bool] = lambda operation: False  # fault injection

    def enqueue(self, body: str, delay_seconds: int) -> None:
        if self.fail("enqueue"):
            raise RuntimeError("SQS SendMessage failed: injected")
        self.retries.send(body, delay_seconds)

    def postpone(self, receipt_handle: str, seconds: int) -> None:
        if self.fail("postpone"):
            raise RuntimeError("SQS ChangeMessageVisibility failed: injected")
        self.retries.change_visibility(receipt_handle, seconds)

    def dead_letter(self, body: str, why: DeadLetter) -> None:
        if self.fail("dead_letter"):
            raise RuntimeError("SQS SendMessage failed: injected")
        self.dead_letters.send(body, 0, why.attributes())


# -- Braze -------------------------------------------------------------------------------------------------------
class MemoryBraze:
    """The `BrazeApi` port: the Braze emulator's workspace called without a socket, its answer classified by the
    same code as the real client's. A hang costs the client's whole timeout on the clock, then times out."""

    def __init__(self, workspace: BrazeWorkspace, clock: Clock, timeout_seconds: float = 7.0):
        self.workspace = workspace
        self.clock = clock
        self.timeout_seconds = timeout_seconds

    def track(self, server: str, api_key: str, objects: list[dict]) -> BrazeOutcome:
        headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        _, answer = self.workspace.receive("POST", TRACK_PATH, headers, track_body(objects))
        if answer.hang:
            self.clock.advance(self.timeout_seconds)
            return transport_failure("timed out")
        return classify_response(answer.status, answer.headers, json.dumps(answer.body).encode(), len(objects))


# -- what the services need around the ports ----------------------------------------------------------------------
class FixedConnector:
    """A connector source that always has this document (the `ConnectorSource` the functions read from Secrets Manager)."""

    def __init__(self, config: ConnectorConfig):
        self.config = config
        self.loads = 0

    def load(self, force: bool = False) -> ConnectorConfig:
        self.loads += 1
        return self.config


class FixedTokens:
    def __init__(self, token: str):
        self._tokens = (token,)

    def valid(self) -> tuple[str, ...]:
        return self._tokens

    def refresh_after_miss(self) -> bool:
        return False


def memory_dependencies(
    config: ConnectorConfig,
    state: MemoryStateStore,
    queues: MemoryQueues,
    braze: MemoryBraze,
    clock: Clock,
    delays: str | None = None,
    objects_per_request: int = 50,
    webhook_token: str = "local-webhook-token",  # noqa: S107 (the local-only token the events/ files carry)
) -> Dependencies:
    """The functions' dependencies over in-memory ports, wired as `runtime.py` wires the real ones."""
    connector = FixedConnector(config)
    delivery = Delivery(
        state=state,
        braze=braze,
        load_config=lambda force: connector.load(force),
        clock=clock,
        objects_per_request=objects_per_request,
        braze_seconds=braze.timeout_seconds,
        concurrency=1,  # deterministic: the same example always runs the same way
        pause=clock.advance,
    )
    return Dependencies(
        connector_source=connector,
        webhook_tokens=FixedTokens(webhook_token),
        access=AccessPolicy(),
        delivery=delivery,
        queue=queues,
        schedule=RetrySchedule.parse(delays),
        webhook_lease_seconds=math.ceil(braze.timeout_seconds) + LEASE_MARGIN_SECONDS,
        clock=clock,
    )


class MemoryWorker:
    """Lambda's SQS event source over a memory queue, one invocation per `poll`: receive a batch, run the worker,
    delete what it did not report as failed. An invocation that raises deletes nothing."""

    def __init__(self, deps: Dependencies, queues: MemoryQueues, clock: Clock, batch_size: int = 10, timeout: int = 60):
        self.deps, self.queues, self.clock = deps, queues, clock
        self.batch_size, self.timeout = batch_size, timeout
        self.invocations = 0

    def poll(self) -> int:
        messages = self.queues.retries.receive(self.batch_size)
        if not messages:
            return 0
        self.invocations += 1
        records = [RetryRecord(m.id, m.receipt or "", m.body, m.receive_count, m.first_received_at) for m in messages]
        deadline = self.clock() + self.timeout - DEADLINE_MARGIN_SECONDS
        failed = set(retry_batch(records, self.deps, deadline))
        for message in messages:
            if message.id not in failed:
                self.queues.retries.delete(message.receipt or "")
        return len(messages)
