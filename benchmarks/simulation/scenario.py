"""The burst scenario: Didomi posts a consent import's webhooks faster than Braze's rate limit allows, and the real
webhook and worker services deliver them through the models of models.py. `simulate` runs it and returns the
figures; `Figures.misses` says which targets it missed."""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import math
import random
import resource
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from didomi_braze.domain.access import AccessPolicy
from didomi_braze.domain.connector import ConnectorConfig, parse_connector_document
from didomi_braze.domain.mapping import desired
from didomi_braze.domain.ratelimit import RateGauge
from didomi_braze.domain.schedule import RetrySchedule
from didomi_braze.observability import logger, metrics_to
from didomi_braze.service.delivery import LEASE_MARGIN_SECONDS, STATE_TABLE_CONCURRENCY, Delivery
from didomi_braze.service.dependencies import Dependencies
from didomi_braze.service.retry import DEADLINE_MARGIN_SECONDS, RetryRecord, retry_batch
from didomi_braze.service.webhook import WebhookRequest, receive_webhook
from sandbox.memory import Clock, FixedConnector, FixedTokens
from sandbox.template import load_template

from .engine import Loop
from .models import Account, BrazeLimits, Function, SimBraze, SimQueues, SimStateStore, TokenBucket, Tracker

MARKETING = "consents_purposes_marketing_enabled"
NEWSLETTER = "consents_purposes_newsletter_enabled"
SALES = "consents_purposes_offers_values_topics_sales_enabled"
INPUTS = (MARKETING, NEWSLETTER, SALES)
CONNECTOR = {
    "type_id": "braze",
    "authentication": {"api_key": "simulated-braze-api-key", "server": "EU-01"},
    "properties": {"regulations": ["gdpr"], "user_identifier": "external_id"},
    "mappings": [
        {"id": "OPTED_IN", "value": MARKETING},
        {"id": "UNSUBSCRIBED", "value": NEWSLETTER},
        {"id": "3f1c9a52-7d4e-4b8a-9c61-2e5f0a7b8d13", "value": SALES},
    ],
}
TOKEN = "simulated-webhook-token"  # noqa: S105 (not a secret: the simulation's own)
BRAZE_SECONDS = 7.0  # the Braze client's connect + read timeouts (runtime.py)
DIDOMI_RETRIES = 5  # Didomi retries a non-2xx answer five times within five minutes
DIDOMI_RETRY_EVERY = 60.0
START = 1_800_000_000.0  # a multiple of Braze's window: windows are counted from the epoch


def template_settings() -> dict:
    """What the template deploys, so that the simulation follows it."""
    template = load_template()
    resources, params = template["Resources"], template["Parameters"]
    source = resources["RetryFunction"]["Properties"]["Events"]["Retries"]["Properties"]
    queue = resources["RetryQueue"]["Properties"]
    return {
        "retry_concurrency": int(params["RetryMaximumConcurrency"]["Default"]),
        "objects_per_request": int(params["BrazeObjectsPerRequest"]["Default"]),
        "batch_size": int(source["BatchSize"]),
        "batching_window": float(source["MaximumBatchingWindowInSeconds"]),
        "visibility_timeout": int(queue["VisibilityTimeout"]),
        "max_receive_count": int(queue["RedrivePolicy"]["maxReceiveCount"]),
        "retry_timeout": int(resources["RetryFunction"]["Properties"]["Timeout"]),
        "webhook_timeout": int(resources["WebhookFunction"]["Properties"]["Timeout"]),
        "api_rate": float(params["ThrottlingRateLimit"]["Default"]),
        "api_burst": float(params["ThrottlingBurstLimit"]["Default"]),
    }


@dataclass(frozen=True)
class Scenario:
    events: int = 1_000_000
    seconds: float = 200.0  # Didomi posts them evenly over this
    users: int = 400_000
    braze_limit: int = 3_000  # /users/track requests per window
    braze_window: float = 3.0
    braze_others_share: float = 0.5  # the customer's other integrations
    braze_5xx: float = 0.01
    braze_latency: float = 0.08
    account_concurrency: int = 1_000  # Lambda's default account limit
    retry_concurrency: int | None = None  # None: the template's RetryMaximumConcurrency
    api_rate: float | None = None  # None: the template's API Gateway throttling
    api_burst: float | None = None
    sync_reserve: float | None = None  # None: the product's RateGauge default
    state_latency: float = 0.006  # one DynamoDB round trip
    sqs_latency: float = 0.008  # one SQS call
    webhook_overhead: float = 0.004  # API Gateway and Lambda's invoke, per webhook
    webhook_cold_start: float = 0.45
    retry_cold_start: float = 0.6
    poll_interval: float = 0.2  # how soon an idle event-source poller sees a message (long polling)
    seed: int = 1

    def scaled(self, divisor: int) -> Scenario:
        """The same burst with events, users and every rate and concurrency limit divided by `divisor`."""
        settings = template_settings()
        return replace(
            self,
            events=self.events // divisor,
            users=self.users // divisor,
            braze_limit=self.braze_limit // divisor,
            account_concurrency=self.account_concurrency // divisor,
            retry_concurrency=max(2, math.ceil((self.retry_concurrency or settings["retry_concurrency"]) / divisor)),
            api_rate=(self.api_rate or settings["api_rate"]) / divisor,
            api_burst=(self.api_burst or settings["api_burst"]) / divisor,
        )


@dataclass
class Figures:
    scenario: Scenario
    settings: dict
    applied: int = 0
    dead_lettered: dict = field(default_factory=dict)
    lost: int = 0
    unfinished: int = 0
    braze_requests: int = 0
    braze_minimum: int = 0
    braze_by_status: dict = field(default_factory=dict)
    braze_single_object: int = 0
    handed_off: int = 0
    last_webhook_at: float = 0.0
    all_applied_after: float | None = None  # seconds after the last webhook
    delay_p50: float = 0.0
    delay_p99: float = 0.0
    delay_max: float = 0.0
    peak_concurrency: int = 0
    lambda_throttled: int = 0
    api_throttled: int = 0
    webhook_answers: dict = field(default_factory=dict)
    didomi_redeliveries: int = 0
    worker_invocations: int = 0
    worker_crashes: int = 0
    webhook_crashes: int = 0
    retry_messages: int = 0
    peak_queue_depth: int = 0
    wrong_states: int = 0
    wrong_examples: list = field(default_factory=list)
    virtual_seconds: float = 0.0
    wall_seconds: float = 0.0
    peak_rss_mb: float = 0.0
    metrics: dict = field(default_factory=dict)

    @property
    def answered_429(self) -> int:
        return self.braze_by_status.get(429, 0)

    def misses(self) -> list[str]:
        """The targets this run missed (empty when it met them all)."""
        out = []
        if self.lost or self.unfinished:
            out.append(f"{self.lost} lost, {self.unfinished} never finished")
        rate_limited = {k: v for k, v in self.dead_lettered.items() if k != "retries_exhausted"}
        if rate_limited:
            out.append(f"dead-lettered other than for failed retries: {rate_limited}")
        if self.answered_429 > self.braze_requests * 0.01:
            out.append(f"{self.answered_429} of {self.braze_requests} Braze requests answered 429 (over 1%)")
        if self.all_applied_after is None or self.all_applied_after > 60:
            out.append(f"everything applied {self.all_applied_after} s after the last webhook (over 60 s)")
        if self.wrong_states:
            out.append(f"{self.wrong_states} users whose final Braze state is not what Didomi calls for")
        return out


class _Counts(Counter):
    def count(self, name: str, value: int) -> None:
        self[name] += value

    def count_by(self, name: str, dimension: str, label: str, value: int) -> None:
        self[f"{name}.{label}"] += value


class Simulation:
    def __init__(self, scenario: Scenario):
        self.started = time.monotonic()
        self.scenario = s = scenario
        self.settings = template_settings()
        if s.retry_concurrency is not None:
            self.settings["retry_concurrency"] = s.retry_concurrency
        self.config: ConnectorConfig = parse_connector_document(json.dumps(CONNECTOR))
        self.rng = random.Random(s.seed)
        self.clock = Clock(START)
        self.loop = Loop(self.clock)
        self.tracker = Tracker(s.events, self.loop)
        self.state = SimStateStore(self.loop, s.state_latency)
        self.queues = SimQueues(
            self.loop, self.tracker, self.settings["visibility_timeout"], self.settings["max_receive_count"], s.sqs_latency
        )
        limits = BrazeLimits(s.braze_limit, s.braze_window, s.braze_others_share, s.braze_5xx, s.braze_latency)
        self.braze = SimBraze(self.loop, limits, random.Random(s.seed * 7919 + 1))
        self.account = Account(s.account_concurrency)
        self.api = TokenBucket(s.api_rate or self.settings["api_rate"], s.api_burst or self.settings["api_burst"], START)
        self.webhooks = Function(self.loop, self._dependencies, s.webhook_cold_start)
        self.workers = Function(self.loop, self._dependencies, s.retry_cold_start)
        self.answers: Counter = Counter()
        self.redeliveries = 0
        self.api_throttled = 0
        self.worker_invocations = 0
        self.worker_crashes = 0
        self.webhook_crashes = 0
        self._events()

    # -- Didomi ----------------------------------------------------------------------------------------------------
    def _events(self) -> None:
        """Each change: a user, and the inputs it sets (a non-empty subset, each true or false), two bits per input."""
        rng, s = self.rng, self.scenario
        self.user_of = [rng.randrange(s.users) for _ in range(s.events)]
        self.bits = bytearray(s.events)
        for i in range(s.events):
            bits = 0
            while not bits & 0b010101:
                bits = 0
                for n in range(len(INPUTS)):
                    if rng.random() < 0.6:
                        bits |= (1 | (rng.random() < 0.5) << 1) << (2 * n)
            self.bits[i] = bits

    def values(self, event: int) -> dict[str, bool]:
        return _values(self.bits[event])

    def body(self, event: int) -> str:
        """Didomi's `event.created` for the change: a confirmed GDPR consent event, stamped one millisecond after
        the one before (Didomi's time orders the changes; it is not the virtual clock). Filled into a template made
        once (`_BODY`): a `json.dumps` of the whole document for each was about a tenth of the run's wall time."""
        second, millisecond = divmod(event, 1000)
        user = self.user_of[event]
        return _BODY % {
            "event": event,
            "created_at": f"{_second(second)}.{millisecond:03d}Z",
            "user": user,
            "purposes": _purposes(self.bits[event]),
        }

    def _post_next(self, event: int) -> None:
        """Didomi's sender: webhook `event` now, and schedules the next."""
        s = self.scenario
        self.tracker.first_sent[event] = self.clock.now
        self._post(event, 0)
        if event + 1 < s.events:
            self.loop.at(START + (event + 1) * s.seconds / s.events, self._post_next, event + 1)

    def _post(self, event: int, attempt: int) -> None:
        if attempt:
            self.redeliveries += 1
        if not self.api.take(self.clock.now):
            self.api_throttled += 1
            self._answered(event, attempt, 429)
            return
        if not self.account.start():
            self._answered(event, attempt, 429)  # Lambda throttled the invocation: API Gateway answers an error
            return
        self.loop.spawn(self._webhook, event, attempt)

    def _answered(self, event: int, attempt: int, status: int) -> None:
        self.answers[status] += 1
        if 200 <= status < 300:
            self.tracker.ack(event)
        elif attempt < DIDOMI_RETRIES:
            self.loop.at(self.clock.now + DIDOMI_RETRY_EVERY, self._post, event, attempt + 1)
        else:
            self.tracker.give_up(event)

    # -- Lambda ----------------------------------------------------------------------------------------------------
    def _dependencies(self) -> Dependencies:
        """One execution environment's dependencies, wired as runtime.py wires the real ones (its own gauge)."""
        s, connector = self.scenario, FixedConnector(self.config)
        gauge = RateGauge() if s.sync_reserve is None else RateGauge(sync_reserve=s.sync_reserve)
        delivery = _Delivery(
            self.loop,
            state=self.state,
            braze=self.braze,
            load_config=lambda force: connector.load(force),
            clock=self.clock,
            objects_per_request=self.settings["objects_per_request"],
            braze_seconds=BRAZE_SECONDS,
            gauge=gauge,
            pause=self.loop.sleep,
        )
        return Dependencies(
            connector_source=connector,
            webhook_tokens=FixedTokens(TOKEN),
            access=AccessPolicy(),
            delivery=delivery,
            queue=self.queues,
            schedule=RetrySchedule.parse(None),
            webhook_lease_seconds=math.ceil(BRAZE_SECONDS) + LEASE_MARGIN_SECONDS,
            clock=self.clock,
            rng=random.Random(self.rng.random()),  # each environment its own jitter, the same in every run of a seed
        )

    def _webhook(self, event: int, attempt: int) -> None:
        status = 502
        try:
            deps = self.webhooks.acquire()
            try:
                self.loop.sleep(self.scenario.webhook_overhead)
                request = WebhookRequest(
                    authorization=f"Bearer {TOKEN}",
                    body=self.body(event),
                    deadline=self.clock.now + self.settings["webhook_timeout"],
                )
                status = receive_webhook(request, lambda: deps).status
            finally:
                self.webhooks.release(deps)
        except Exception:
            self.webhook_crashes += 1  # Lambda answers 502: Didomi delivers again
            logger.exception("simulated webhook invocation crashed")
        finally:
            self.account.end()
        self._answered(event, attempt, status)

    def _poller(self) -> None:
        """One of the event source's pollers (MaximumConcurrency of them): gather a batch, invoke, delete what the
        worker did not report as failed."""
        settings, loop, queues = self.settings, self.loop, self.queues
        batch_size = settings["batch_size"]
        while not self.finished():
            batch = queues.receive(batch_size)
            if not batch:
                loop.sleep(self.scenario.poll_interval)
                continue
            window_ends = self.clock.now + settings["batching_window"]
            while len(batch) < batch_size and self.clock.now < window_ends:
                loop.sleep(min(self.scenario.poll_interval, window_ends - self.clock.now))
                batch += queues.receive(batch_size - len(batch))
            while not self.account.start():
                loop.sleep(1.0)  # throttled: the poller holds the batch and invokes again
            self.worker_invocations += 1
            try:
                deps = self.workers.acquire()
                try:
                    started = self.clock.now
                    records = [RetryRecord(f"m-{m[0]}", m[1], m[2], m[3], m[4]) for m in batch]
                    deadline = started + settings["retry_timeout"] - DEADLINE_MARGIN_SECONDS
                    failed = set(retry_batch(records, deps, deadline))
                finally:
                    self.workers.release(deps)
                for message_id, handle, _, _, _ in batch:
                    if f"m-{message_id}" not in failed:
                        queues.delete(handle)
            except Exception:
                self.worker_crashes += 1  # nothing deleted: the batch comes back after the visibility timeout
                logger.exception("simulated worker invocation crashed")
            finally:
                self.account.end()

    def finished(self) -> bool:
        return self.tracker.finished >= self.scenario.events and not self.queues.messages

    # -- the run ---------------------------------------------------------------------------------------------------
    def run(self) -> Figures:
        counts = _Counts()
        level = logger.log_level
        logger.setLevel("CRITICAL")
        # The run holds millions of long-lived objects (every user's state, the queues, the trackers) and makes no
        # cyclic garbage of note: Python's cyclic collector would only walk them again and again, 27 s of a 294 s run
        # at half the size (timed with gc.callbacks). It is off during the run; reference counting still frees
        # everything else, and the peak RSS is the same with it on or off (measured at a tenth, a quarter and full size).
        collecting = gc.isenabled()
        gc.disable()
        try:
            with contextlib.ExitStack() as stack:
                stack.enter_context(metrics_to(counts))
                self.loop.at(START, self._post_next, 0)
                for _ in range(self.settings["retry_concurrency"]):
                    self.loop.spawn(self._poller)
                self.loop.run()
        finally:
            logger.setLevel(level)
            if collecting:
                gc.enable()
        return self._figures(counts)

    def _figures(self, counts: Counter) -> Figures:
        s, tracker, braze = self.scenario, self.tracker, self.braze
        delays = sorted(done - sent for done, sent in zip(tracker.done_at, tracker.first_sent, strict=True) if done >= 0)
        applied = len(delays)
        last_webhook = START + (s.events - 1) * s.seconds / s.events
        last_done = max(tracker.done_at)
        figures = Figures(
            scenario=s,
            settings=dict(self.settings),
            applied=applied,
            dead_lettered=dict(self.queues.dead_letters),
            lost=tracker.lost,
            unfinished=s.events - tracker.finished,
            braze_requests=braze.requests,
            braze_minimum=math.ceil(s.events / self.settings["objects_per_request"]),
            braze_by_status=dict(sorted(braze.by_status.items())),
            braze_single_object=braze.single_object,
            handed_off=counts.get("EventsHandedOff", 0),
            last_webhook_at=last_webhook - START,
            all_applied_after=round(last_done - last_webhook, 1) if applied == s.events else None,
            delay_p50=_quantile(delays, 0.5),
            delay_p99=_quantile(delays, 0.99),
            delay_max=delays[-1] if delays else 0.0,
            peak_concurrency=self.account.peak,
            lambda_throttled=self.account.throttled,
            api_throttled=self.api_throttled,
            webhook_answers=dict(sorted(self.answers.items())),
            didomi_redeliveries=self.redeliveries,
            worker_invocations=self.worker_invocations,
            worker_crashes=self.worker_crashes,
            webhook_crashes=self.webhook_crashes,
            retry_messages=self.queues.sent,
            peak_queue_depth=self.queues.peak_depth,
            virtual_seconds=round(self.clock.now - START, 1),
            peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            metrics=dict(sorted(counts.items())),
        )
        self._check_final_states(figures)
        figures.wall_seconds = round(time.monotonic() - self.started, 1)  # drawing the burst, the run, the figures
        return figures

    def _check_final_states(self, figures: Figures) -> None:
        """The final Braze state of every user must be what the newest Didomi state calls for."""
        truth: dict[int, dict[str, bool]] = {}
        for event in range(self.scenario.events):  # in Didomi's order: a later change's inputs win
            truth.setdefault(self.user_of[event], {}).update(self.values(event))
        for user, values in truth.items():
            want = desired(values, self.config)
            have = self.braze.users.get(f"user-{user}", {})
            if any(have.get(name) != value for name, value in want.items()):
                figures.wrong_states += 1
                if len(figures.wrong_examples) < 5:
                    figures.wrong_examples.append({"user": f"user-{user}", "want": want, "braze": have})


# The webhook body with %-placeholders where the event's own values go (the rest is JSON text already).
_BODY = json.dumps(
    {
        "type": "event.created",
        "parameters": {
            "entity": {
                "id": "ev-@event@",
                "organization_id": "example-org",
                "created_at": "@created_at@",
                "status": "confirmed",
                "regulation": "gdpr",
                "user": {"id": "didomi-user-@user@", "organization_user_id": "user-@user@"},
                "consents": {"purposes": "@purposes@", "vendors": {"enabled": [], "disabled": []}},
            }
        },
    },
    separators=(",", ":"),
)
_BODY = (
    _BODY.replace('"@purposes@"', "%(purposes)s")
    .replace("@event@", "%(event)d")
    .replace("@created_at@", "%(created_at)s")
    .replace("@user@", "%(user)d")
)


@functools.cache
def _second(second: int) -> str:
    """The change's time to the second, ISO 8601 (Didomi's format): START plus `second` seconds."""
    return datetime.fromtimestamp(START + second, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _values(bits: int) -> dict[str, bool]:
    """The inputs a change sets, and their values, from its bits: two per input (set, value)."""
    return {name: bool(bits >> (2 * n + 1) & 1) for n, name in enumerate(INPUTS) if bits >> (2 * n) & 1}


@functools.cache
def _purposes(bits: int) -> str:
    """The consent event's purposes (JSON text) for a change's bits (`Simulation._events`)."""
    values = _values(bits)
    purposes: list[dict] = [
        {"id": purpose, "enabled": values[name]}
        for name, purpose in ((MARKETING, "marketing"), (NEWSLETTER, "newsletter"))
        if name in values
    ]
    if SALES in values:
        topic = "sales" if values[SALES] else "news"
        purposes.append({"id": "offers", "enabled": None, "values": {"topics": {"value": topic}}})
    return json.dumps(purposes, separators=(",", ":"))


class _Delivery(Delivery):
    """The product's delivery flow with its state-table round trips side by side in greenlets, as many at once as
    the product's thread pool runs, instead of in threads."""

    def __init__(self, loop: Loop, **kwargs):
        super().__init__(concurrency=STATE_TABLE_CONCURRENCY, **kwargs)
        self.loop = loop

    def _parallel(self, function, items: list) -> list:
        if len(items) <= 1 or self.concurrency <= 1:
            return [function(item) for item in items]
        return self.loop.gather(function, items, self.concurrency)


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    return round(values[min(len(values) - 1, int(q * len(values)))], 2)


def simulate(scenario: Scenario) -> Figures:
    return Simulation(scenario).run()
