"""The outside world of the simulation: Didomi, API Gateway, Lambda, SQS, DynamoDB and Braze, on the virtual clock.

The product's own code is not modelled: the webhook and worker services, the delivery flow and the domain run as
they are, on these adapters. The adapters take virtual time where the real calls do (a greenlet suspends on
`Loop.sleep`), and keep the semantics the product relies on:

- SQS: DelaySeconds, the visibility timeout started at receive, ChangeMessageVisibility by receipt handle, the
  receive count and the first receive's time, and the redrive policy (maxReceiveCount) to the dead-letter queue.
- DynamoDB: the in-memory state store of sandbox/memory.py (the conditional writes of state_table.py) with a
  round trip's latency, its condition judged halfway through.
- Braze: `/users/track` with the workspace's fixed rate-limit windows (X-RateLimit-Limit/-Remaining/-Reset on
  every answer, 429 over the limit), the other integrations' share of each window spent evenly across it, the
  per-request object limit, a response latency, and a share of random 5xx. An accepted request is applied when
  its answer is sent.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable
from dataclasses import dataclass

from didomi_braze.domain.braze import MAX_OBJECTS_PER_REQUEST, BrazeOutcome, classify_response
from didomi_braze.domain.mapping import EMAIL_FIELD, group_field
from didomi_braze.domain.ports import DeadLetter
from sandbox.memory import MemoryStateStore

from .engine import Loop

SUCCESS = b'{"message":"success"}'
RATE_LIMITED_BODY = b'{"message":"API rate limit reached"}'
SERVER_ERROR = b'{"message":"internal server error"}'
TOO_MANY_OBJECTS = b'{"message":"too many objects in one request"}'


class Tracker:
    """What became of each Didomi change: acknowledged, waiting in the retry queue, applied, parked or lost."""

    def __init__(self, events: int, loop: Loop):
        self.loop = loop
        self.first_sent = [0.0] * events
        self.done_at = [-1.0] * events
        self.acked = bytearray(events)
        self.live = [0] * events  # copies of the change in the retry queue
        self.dead: dict[int, str] = {}  # event -> dead-letter category
        self.lost = 0
        self.finished = 0  # applied, parked or lost

    @staticmethod
    def event_of(body: str) -> int:
        start = body.find(":ev-") + 4
        return int(body[start : body.find('"', start)])

    def ack(self, event: int) -> None:
        if not self.acked[event]:
            self.acked[event] = 1
            self._check(event)

    def queued(self, body: str) -> None:
        self.live[self.event_of(body)] += 1

    def removed(self, body: str) -> None:
        event = self.event_of(body)
        self.live[event] -= 1
        self._check(event)

    def parked(self, body: str, category: str) -> None:
        event = self.event_of(body)
        if event not in self.dead:
            self.dead[event] = category
            if self.done_at[event] < 0:
                self.finished += 1

    def give_up(self, event: int) -> None:
        self.lost += 1
        self.finished += 1

    def _check(self, event: int) -> None:
        if self.acked[event] and self.live[event] == 0 and self.done_at[event] < 0 and event not in self.dead:
            self.done_at[event] = self.loop.clock.now
            self.finished += 1


# -- SQS ---------------------------------------------------------------------------------------------------------
class _Message:
    __slots__ = ("body", "visible_at", "receives", "first_received_at", "receipt")

    def __init__(self, body: str, visible_at: float):
        self.body, self.visible_at = body, visible_at
        self.receives, self.first_received_at, self.receipt = 0, None, 0


class SimQueues:
    """RetryQueue and its dead-letter queue: the `RetryQueue` port for the services, `receive`/`delete` for Lambda's
    event source. Each port call takes an SQS round trip of virtual time."""

    def __init__(self, loop: Loop, tracker: Tracker, visibility_timeout: int, max_receive_count: int, latency: float):
        self._push = heapq.heappush
        self._pop = heapq.heappop
        self.loop, self.tracker = loop, tracker
        self.visibility_timeout, self.max_receive_count, self.latency = visibility_timeout, max_receive_count, latency
        self.messages: dict[int, _Message] = {}
        self._heap: list = []
        self._ids = 0
        self.sent = 0
        self.peak_depth = 0
        self.dead_letters: dict[str, int] = {}

    # the port
    def enqueue(self, body: str, delay_seconds: int) -> None:
        if not 0 <= delay_seconds <= 900:
            raise ValueError("DelaySeconds must be 0-900")
        self.loop.sleep(self.latency)
        self._ids += 1
        visible_at = self.loop.clock.now + delay_seconds
        self.messages[self._ids] = _Message(body, visible_at)
        self._push(self._heap, (visible_at, self._ids))
        self.sent += 1
        self.tracker.queued(body)
        self.peak_depth = max(self.peak_depth, len(self.messages))

    def postpone(self, receipt_handle: str, seconds: int) -> None:
        self.loop.sleep(self.latency)
        message_id, receipt = _handle(receipt_handle)
        message = self.messages.get(message_id)
        if message is None or message.receipt != receipt:
            raise ValueError("ReceiptHandleIsInvalid")
        message.visible_at = self.loop.clock.now + seconds
        self._push(self._heap, (message.visible_at, message_id))

    def dead_letter(self, body: str, why: DeadLetter) -> None:
        self.loop.sleep(self.latency)
        self._park(body, why.category)

    # the event source
    def receive(self, count: int) -> list[tuple[int, str, str, int, float]]:
        now, heap, got = self.loop.clock.now, self._heap, []
        while heap and heap[0][0] <= now and len(got) < count:
            visible_at, message_id = self._pop(heap)
            message = self.messages.get(message_id)
            if message is None or message.visible_at != visible_at:
                continue  # deleted, or made visible at another time since
            if message.receives >= self.max_receive_count:  # the redrive policy
                del self.messages[message_id]
                self._park(message.body, "redrive")
                self.tracker.removed(message.body)
                continue
            message.receives += 1
            message.receipt += 1
            message.first_received_at = message.first_received_at or now
            message.visible_at = now + self.visibility_timeout
            self._push(heap, (message.visible_at, message_id))
            handle = f"{message_id}#{message.receipt}"
            got.append((message_id, handle, message.body, message.receives, message.first_received_at))
        return got

    def delete(self, receipt_handle: str) -> None:
        message_id, receipt = _handle(receipt_handle)
        message = self.messages.get(message_id)
        if message is not None and message.receipt == receipt:
            del self.messages[message_id]
            self.tracker.removed(message.body)
            if len(self._heap) > 4 * len(self.messages) + 1024:
                self._compact()

    def _compact(self) -> None:
        """Drop the heap's stale entries: a received message's entry for the end of its visibility timeout (6 min)
        outlives its deletion, and a burst left almost a million of them. Each message keeps its one live entry,
        so messages come out in the same order."""
        self._heap = [(message.visible_at, message_id) for message_id, message in self.messages.items()]
        heapq.heapify(self._heap)

    def _park(self, body: str, category: str) -> None:
        self.dead_letters[category] = self.dead_letters.get(category, 0) + 1
        self.tracker.parked(body, category)


def _handle(receipt_handle: str) -> tuple[int, int]:
    message_id, receipt = receipt_handle.split("#")
    return int(message_id), int(receipt)


# -- DynamoDB ----------------------------------------------------------------------------------------------------
class SimStateStore(MemoryStateStore):
    """The state table: the memory store's conditional writes, each a round trip of virtual time."""

    def __init__(self, loop: Loop, latency: float):
        super().__init__()
        self.loop, self.latency = loop, latency
        self.calls = 0

    def _round_trip(self, call, *args, **kwargs):
        """A write that lands halfway through its round trip: what another invocation reads meanwhile is before it."""
        self.calls += 1
        self.loop.sleep(self.latency / 2)
        try:
            return call(*args, **kwargs)
        finally:
            self.loop.sleep(self.latency / 2)

    def claim(self, *args, **kwargs):
        return self._round_trip(super().claim, *args, **kwargs)

    def release(self, *args, **kwargs):
        return self._round_trip(super().release, *args, **kwargs)

    def read(self, key):
        self.calls += 1
        self.loop.sleep(self.latency)
        return super().read(key)


# -- Braze -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BrazeLimits:
    requests_per_window: int
    window_seconds: float
    others_share: float  # of each window, spent evenly across it by the customer's other integrations
    server_error_rate: float
    latency: float  # seconds, median-ish of an accepted request; 429s are answered faster


class SimBraze:
    """The `BrazeApi` port: Braze's `/users/track` as the model above describes, answered through the product's
    own `classify_response`."""

    def __init__(self, loop: Loop, limits: BrazeLimits, rng: random.Random):
        self.loop, self.limits, self.rng = loop, limits, rng
        self.users: dict[str, dict[str, str]] = {}
        self._window_start = -1.0
        self._ours = 0  # requests in the current window
        self.requests = 0
        self.objects = 0
        self.by_status: dict[int, int] = {}
        self.single_object = 0
        self.sent_at: list[float] = []  # time of every request, for the peak rate

    def track(self, server: str, api_key: str, objects: list[dict]) -> BrazeOutcome:
        limits, rng = self.limits, self.rng
        accepted_latency = limits.latency * (0.6 + rng.expovariate(2.5)) + 0.002 * len(objects)
        self.loop.sleep(accepted_latency / 2)  # the request reaches Braze
        now = self.loop.clock.now
        self.requests += 1
        self.single_object += len(objects) == 1
        window = limits.window_seconds
        start = math.floor(now / window) * window
        if start != self._window_start:
            self._window_start, self._ours = start, 0
        others = math.floor(limits.requests_per_window * limits.others_share * (now - start) / window)
        used = self._ours + others
        reset = start + window
        if used >= limits.requests_per_window:
            status, body = 429, RATE_LIMITED_BODY
            remaining = 0
            wait = 0.02
        else:
            self._ours += 1
            remaining = limits.requests_per_window - used - 1
            wait = accepted_latency / 2
            if len(objects) > MAX_OBJECTS_PER_REQUEST:
                status, body = 400, TOO_MANY_OBJECTS
            elif rng.random() < limits.server_error_rate:
                status, body = 500, SERVER_ERROR
            else:
                status, body = 201, SUCCESS
        headers = {
            "X-RateLimit-Limit": str(limits.requests_per_window),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": str(int(reset)),
        }
        self.loop.sleep(wait)
        if status == 201:
            self.objects += len(objects)
            for obj in objects:
                self._apply(obj)
        self.by_status[status] = self.by_status.get(status, 0) + 1
        return classify_response(status, headers, body, len(objects))

    def _apply(self, obj: dict) -> None:
        user = self.users.setdefault(obj["external_id"], {})
        if "email_subscribe" in obj:
            user[EMAIL_FIELD] = obj["email_subscribe"]
        for group in obj.get("subscription_groups", ()):
            user[group_field(group["subscription_group_id"])] = group["subscription_state"]


# -- Lambda ------------------------------------------------------------------------------------------------------
class Account:
    """The account's concurrent executions: a limit across functions, and the peak reached."""

    def __init__(self, limit: int):
        self.limit, self.running, self.peak = limit, 0, 0
        self.throttled = 0

    def start(self) -> bool:
        if self.running >= self.limit:
            self.throttled += 1
            return False
        self.running += 1
        self.peak = max(self.peak, self.running)
        return True

    def end(self) -> None:
        self.running -= 1


class Function:
    """A function's execution environments: one invocation at a time each, a cold start for each new one."""

    def __init__(self, loop: Loop, make: Callable[[], object], cold_start: float):
        self.loop, self.make, self.cold_start = loop, make, cold_start
        self.idle: list = []
        self.environments = 0

    def acquire(self):
        if self.idle:
            return self.idle.pop()
        self.environments += 1
        self.loop.sleep(self.cold_start)
        return self.make()

    def release(self, environment) -> None:
        self.idle.append(environment)


class TokenBucket:
    """API Gateway's throttling of the route: a steady rate and a burst."""

    def __init__(self, rate: float, burst: float, now: float):
        self.rate, self.burst = rate, burst
        self.tokens, self.at = burst, now

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False
