"""The flow back, Braze → Didomi, rule by rule: the real services (ingest, delivery, webhook) and the real Didomi
client on the in-memory ports (sandbox/memory.py, sandbox/memory_flowback.py, held to the real adapters by
test_flowback_doubles.py). Braze's changes become real Avro files through the Currents export; time is the
virtual clock's."""

import collections
import json

import pytest

from didomi_braze.domain.connector import parse_connector_document
from didomi_braze.domain.currents import GLOBAL_STATE_CHANGE, IngestMessage
from didomi_braze.domain.origin import FLOW_BACK_DELEGATE_ID
from didomi_braze.domain.retry import PendingChange
from didomi_braze.domain.writeback import didomi_event_id
from didomi_braze.observability import metrics_to
from didomi_braze.service.webhook import WebhookRequest, receive_webhook
from sandbox.braze_emulator import BrazeWorkspace
from sandbox.currents import CurrentsExport, avro_file, currents_key, record_of
from sandbox.didomi_emulator import DidomiOrganization
from sandbox.memory import Clock, MemoryBraze, MemoryQueues, MemoryStateStore, MemoryWorker, memory_dependencies
from sandbox.memory_flowback import MemoryCurrentsFiles, MemoryEventLedger, MemoryIngestWorker, memory_flow_back
from tests.samples import BRAZE_API_KEY, WEBHOOK_TOKEN, connector_document, currents_records, didomi_body

BUCKET = "braze-currents-123456789012-4c1f7a52"
USER = "external_id:customer-42"
SALES = "3f1c9a52-7d4e-4b8a-9c61-2e5f0a7b8d13"
NEWSLETTER = "consents_purposes_newsletter_enabled"
SALES_VALUE = "consents_purposes_offers_values_topics_sales_enabled"
DELAYS = "30,45,55,65,75"


class Counts(collections.Counter):
    def count(self, name: str, value: int) -> None:
        self[name] += value

    def count_by(self, name: str, dimension: str, label: str, value: int) -> None:
        self[f"{name}.{label}"] += value


class World:
    """Braze, Didomi, AWS and both directions of the connector, in memory."""

    def __init__(self, opt_ins: bool = False, regulations: tuple[str, ...] = ("gdpr",)):
        self.clock = Clock()
        doc = connector_document(
            "http://127.0.0.1:9", properties={"regulations": list(regulations), "user_identifier": "external_id"}
        )
        self.config = parse_connector_document(json.dumps(doc), allow_loopback=True)
        self.braze = BrazeWorkspace(api_key=BRAZE_API_KEY, known_users=(USER,), clock=self.clock)
        self.state = MemoryStateStore()
        self.queues = MemoryQueues(self.clock)  # the forward path's retry and dead-letter queues
        self.deps = memory_dependencies(
            self.config, self.state, self.queues, MemoryBraze(self.braze, self.clock), self.clock, DELAYS
        )
        self.didomi = DidomiOrganization(organization_id="org-1", clock=self.clock)
        self.files = MemoryCurrentsFiles()
        self.ledger = MemoryEventLedger(self.clock)
        self.ingest_queues = MemoryQueues(self.clock, visibility_timeout=1800)
        self.flow = memory_flow_back(
            self.deps, self.state, self.didomi, self.files, self.ledger, self.ingest_queues, self.clock, opt_ins
        )
        self.ingest = MemoryIngestWorker(self.deps, self.flow, self.ingest_queues, self.clock)
        self.retry_worker = MemoryWorker(self.deps, self.queues, self.clock)
        self.currents = CurrentsExport(self.braze, lambda key, data: self.files.put(BUCKET, key, data))

    # -- what happens in each system ---------------------------------------------------------------------------
    def in_braze(self, email: str | None = None, groups: dict | None = None, source: str = "Subscription Page") -> None:
        self.braze.change_subscription(USER, email_subscribe=email, groups=groups, source=source)

    def in_didomi_webhook(self, body: dict) -> dict:
        answer = receive_webhook(WebhookRequest(f"Bearer {WEBHOOK_TOKEN}", json.dumps(body)), lambda: self.deps)
        return {**answer.body, "http": answer.status}

    def currents_arrive(self, duplicate: bool = False) -> list[str]:
        """Braze writes its Currents files; S3 notifies the ingest queue; IngestFunction runs until it is empty."""
        self.clock.advance(60)  # Currents writes its files every few minutes
        keys = self.currents.flush(duplicate=duplicate)
        self.ingest.notify(BUCKET, keys)
        self.drain()
        return keys

    def drain(self, rounds: int = 10) -> None:
        for _ in range(rounds):
            if not self.ingest.poll():
                return

    def put_file(self, event_type: str, records: list[dict]) -> str:
        key = currents_key("currents", event_type, self.clock(), offset=len(self.files.objects))
        self.files.put(BUCKET, key, avro_file(event_type, records))
        self.ingest.notify(BUCKET, [key])
        return key

    def didomi_sends_its_notifications(self) -> list[dict]:
        return [self.in_didomi_webhook(n) for n in self.didomi.drain_notifications()]

    def written(self) -> list[dict]:
        return [e for e in self.didomi.events.values() if e.get("delegate", {}).get("id") == FLOW_BACK_DELEGATE_ID]

    def didomi_value(self, purpose: str = "newsletter"):
        user = self.didomi.user("customer-42")
        return next((p.get("enabled") for p in user["consents"]["purposes"] if p["id"] == purpose), None) if user else None

    def parked(self) -> list:
        return list(self.ingest_queues.dead_letters.messages.values())


@pytest.fixture
def world():
    counts = Counts()
    with metrics_to(counts):
        w = World()
        w.counts = counts
        yield w


def _subscribed_in_didomi(world: World) -> None:
    """customer-42 consents to the newsletter and to sales offers in Didomi; the webhook gives Braze opted_in."""
    world.didomi.add_user(
        "customer-42",
        {
            "purposes": [{"id": "newsletter", "enabled": True}, {"id": "offers", "values": {"topics": {"value": "sales,news"}}}],
            "channels": [],
            "vendors": {},
        },
    )
    assert world.in_didomi_webhook(didomi_body("event-created"))["http"] == 200
    assert world.braze.state(USER).email_subscribe == "opted_in"
    world.currents.exported = len(world.braze.subscription_changes)  # Currents of the forward path: another test's subject
    world.clock.advance(60)


# -- an unsubscribe in Braze reaches Didomi -----------------------------------------------------------------------
def test_an_unsubscribe_in_braze_reaches_didomi_tagged_and_does_not_come_back(world):
    _subscribed_in_didomi(world)
    world.in_braze(email="unsubscribed", source="Subscription Page")
    change = world.braze.subscription_changes[-1]
    braze_calls = len(world.braze.track_requests())
    world.currents_arrive()

    [event] = world.written()
    assert event["id"] == didomi_event_id(change.id, "gdpr")
    assert event["consents"] == {"purposes": [{"id": "newsletter", "enabled": False}]}
    assert event["delegate"]["metadata"]["braze_state_change_source"] == "Subscription Page"
    assert world.didomi_value() is False
    assert world.counts["DidomiEventsWritten"] == 1
    # Didomi tells its integrations; the webhook recognises the connector's own event and leaves Braze alone.
    answers = world.didomi_sends_its_notifications()
    assert [(a["http"], a["reason"]) for a in answers] == [(200, "from_braze"), (200, "from_braze")]
    assert world.braze.state(USER).email_subscribe == "unsubscribed"
    assert len(world.braze.track_requests()) <= braze_calls + 1  # at most the ingest's confirmation of the merged state
    world.currents_arrive()
    assert len(world.written()) == 1  # nothing new in Braze, nothing new in Didomi: the loop is closed


def test_the_written_value_joins_the_merged_state_so_a_later_didomi_change_is_judged_on_it(world):
    _subscribed_in_didomi(world)
    world.in_braze(email="unsubscribed")
    world.currents_arrive()
    record = world.state.read(next(iter(world.state.items)))
    assert record.inputs[NEWSLETTER].value is False and record.inputs[NEWSLETTER].position.entity.startswith("braze:")
    # A Didomi change of another consent does not bring the old opt-in back to Braze.
    body = didomi_body("event-updated")
    body["parameters"]["new_entity"]["updated_at"] = "2027-01-15T09:00:00Z"
    world.in_didomi_webhook(body)
    assert world.braze.state(USER).email_subscribe == "unsubscribed"


def test_a_group_unsubscribe_removes_only_that_value_from_the_didomi_preference(world):
    _subscribed_in_didomi(world)
    world.in_braze(groups={SALES: "unsubscribed"}, source="Preference Center")
    world.currents_arrive()
    [event] = world.written()
    assert event["consents"] == {"purposes": [{"id": "offers", "values": {"topics": {"value": "news"}}}]}
    assert world.braze.state(USER).subscription_groups[SALES] == "unsubscribed"


def test_changes_of_one_user_are_written_in_the_order_braze_made_them(world):
    world.flow.opt_ins = True
    _subscribed_in_didomi(world)
    world.in_braze(groups={SALES: "unsubscribed"})
    world.clock.advance(5)
    world.in_braze(groups={SALES: "subscribed"})
    world.clock.advance(5)
    world.in_braze(email="unsubscribed")
    world.currents_arrive()
    values = [e["consents"]["purposes"][0].get("values", {}).get("topics", {}).get("value") for e in world.written()]
    assert values == ["news", "news,sales", None]  # the re-subscribe started from the state the unsubscribe left
    assert world.didomi_value() is False


# -- what is not written ------------------------------------------------------------------------------------------
def test_the_full_loop_a_didomi_change_reaches_braze_and_its_currents_echo_writes_nothing(world):
    world.didomi.add_user("customer-42", {"purposes": [{"id": "newsletter", "enabled": True}], "channels": [], "vendors": {}})
    assert world.in_didomi_webhook(didomi_body("user-updated"))["http"] == 200  # newsletter withdrawn in Didomi
    assert world.braze.state(USER).email_subscribe == "unsubscribed"
    assert world.braze.subscription_changes[-1].source == "REST API"
    world.currents_arrive()  # Braze reports the change the connector made
    assert world.written() == [] and not world.didomi.events
    assert world.counts["CurrentsEventsSkipped.echo"] == 1


def test_opt_ins_made_in_braze_flow_back_only_when_enabled(world):
    world.in_braze(email="opted_in", source="Dashboard")
    world.currents_arrive()
    assert world.written() == [] and world.counts["CurrentsEventsSkipped.opt_in_disabled"] == 1
    world.flow.opt_ins = True
    world.in_braze(email="unsubscribed")
    world.clock.advance(1)
    world.in_braze(email="opted_in", source="Dashboard")
    world.currents_arrive()
    assert [e["consents"]["purposes"][0]["enabled"] for e in world.written()] == [False, True]


def test_global_subscribed_writes_nothing(world):
    world.flow.opt_ins = True
    world.in_braze(email="subscribed", source="Dashboard")
    world.currents_arrive()
    assert world.written() == [] and world.counts["CurrentsEventsSkipped.neutral"] == 1


def test_a_braze_change_older_than_the_newest_didomi_value_is_not_written(world):
    world.in_braze(email="unsubscribed", source="Dashboard")  # at 1_800_000_000
    body = didomi_body("event-created")  # newsletter granted in Didomi, a minute later
    body["parameters"]["entity"]["created_at"] = "2027-01-15T08:01:00Z"
    world.in_didomi_webhook(body)
    world.currents_arrive()
    assert world.written() == [] and world.counts["CurrentsEventsSkipped.superseded"] >= 1


def test_a_value_didomi_already_has_is_not_written(world):
    world.didomi.add_user("customer-42", {"purposes": [{"id": "newsletter", "enabled": False}], "channels": [], "vendors": {}})
    world.in_braze(email="unsubscribed", source="Dashboard")
    world.currents_arrive()
    assert world.written() == [] and world.counts["CurrentsEventsSkipped.no_change"] == 1


def test_files_of_other_event_types_are_acknowledged_without_being_read(world):
    world.ingest.notify(BUCKET, ["currents/x/event_type=users.messages.email.Send/date=2027-01-15-08/1/z/f.avro"])
    world.drain()
    assert world.files.reads == 0 and world.ingest_queues.retries.depth() == 0
    assert world.counts["CurrentsFilesSkipped.not_subscription"] == 1


def test_s3s_test_event_is_acknowledged(world):
    world.ingest_queues.retries.send(json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent"}))
    world.drain()
    assert world.ingest_queues.retries.depth() == 0 and not world.parked()


# -- at least once ------------------------------------------------------------------------------------------------
def test_an_event_delivered_twice_is_written_once(world):
    world.in_braze(email="unsubscribed")
    world.currents_arrive(duplicate=True)  # the same file twice
    assert len(world.written()) == 1 and world.counts["CurrentsEventsSkipped.duplicate"] == 1
    world.put_file(GLOBAL_STATE_CHANGE, [dict(r) for r in _records_of(world)])  # again, an hour later
    world.drain()
    assert len(world.written()) == 1 and world.counts["CurrentsEventsSkipped.duplicate"] == 2


def test_a_write_whose_record_was_lost_counts_as_written_when_it_comes_back(world):
    world.ledger.fail = lambda operation: operation == "record"  # the invocation dies before recording
    world.in_braze(email="unsubscribed")
    keys = world.currents_arrive()
    world.ledger.fail = lambda operation: False
    world.ingest.notify(BUCKET, keys)  # Currents delivers the file again
    world.drain()
    assert len(world.written()) == 1
    assert [r.status for r in world.didomi.requests if r.path == "/v1/consents/events"] == [200]


def test_a_write_whose_answer_was_lost_is_not_written_twice_and_joins_the_merged_state(world):
    world.didomi.fail_next("hang", path="/v1/consents/events")
    world.in_braze(email="unsubscribed")
    world.currents_arrive()
    assert world.ingest.last_failures  # timed out: the message comes back after the first delay
    world.clock.advance(31)
    world.drain()
    assert len(world.written()) == 1 and world.ingest_queues.retries.depth() == 0
    assert [r.status for r in world.didomi.requests if r.path == "/v1/consents/events"] == [200]
    [record] = world.state.items.values()
    assert record.inputs[NEWSLETTER].value is False  # the webhook skips the tagged event: the ingest merged it


def test_a_repeated_write_that_didomi_already_has_counts_as_written(world):
    world.in_braze(email="unsubscribed")
    change = world.braze.subscription_changes[-1]
    # An event with the id the flow back derives for this change is in Didomi already, while the user's consents
    # do not show the value (another change came after it): the write is refused as existing, and counts as done.
    world.flow.didomi.create_event(
        {
            "id": didomi_event_id(change.id, "gdpr"),
            "user": {"organization_user_id": "customer-42"},
            "consents": {"purposes": [{"id": "newsletter", "enabled": True}]},
        }
    )
    world.currents_arrive()
    assert [r.status for r in world.didomi.requests if r.path == "/v1/consents/events"] == [200, 409]
    assert world.ingest_queues.retries.depth() == 0 and not world.parked() and world.counts["DidomiEventsWritten"] == 1


# -- retries ------------------------------------------------------------------------------------------------------
def test_didomi_5xx_is_retried_on_the_schedule_then_written(world):
    world.didomi.fail_next("503", "500", path="/v1/consents/events")
    world.in_braze(email="unsubscribed")
    world.currents_arrive()
    assert world.written() == [] and world.ingest_queues.retries.depth() == 1
    world.clock.advance(29)
    world.drain()
    assert world.written() == []  # the first delay (30 s) has not passed
    world.clock.advance(1)
    world.drain()
    world.clock.advance(45)
    world.drain()
    assert len(world.written()) == 1 and world.ingest_queues.retries.depth() == 0
    assert world.counts["IngestRetriesScheduled"] == 2


def test_retries_spent_park_each_owed_event_with_its_reason(world):
    world.didomi.fail_next(*["503"] * 10, path="/v1/consents/events")
    world.in_braze(email="unsubscribed")
    world.currents_arrive()
    for delay in (30, 45, 55, 65, 75):
        world.clock.advance(delay)
        world.drain()
    [parked] = world.parked()
    assert parked.attributes["category"] == "retries_exhausted"
    assert parked.attributes["last_didomi_status"] == "503" and parked.attributes["attempts"] == "6"
    assert "retries exhausted after 5 retries" in parked.attributes["reason"]
    assert IngestMessage.__name__ == "IngestMessage" and json.loads(parked.body)["kind"] == "currents_event"
    assert world.ingest_queues.retries.depth() == 0 and world.written() == []


def test_a_parked_event_replayed_from_the_dead_letter_queue_is_written(world):
    world.didomi.fail_next(*["503"] * 6, path="/v1/consents/events")
    world.in_braze(email="unsubscribed")
    world.currents_arrive()
    for delay in (30, 45, 55, 65, 75):
        world.clock.advance(delay)
        world.drain()
    [parked] = world.parked()
    world.ingest_queues.retries.send(parked.body)  # start-message-move-task, once Didomi is back
    world.drain()
    assert len(world.written()) == 1


def test_didomi_429_waits_without_spending_a_retry(world):
    world.didomi.fail_next("429", path="/v1/consents/events")
    world.in_braze(email="unsubscribed")
    world.currents_arrive()
    assert world.ingest.last_failures == [] and world.counts["IngestDeferred"] == 1
    [copy] = world.ingest_queues.retries.messages.values()
    assert copy.visible_at - world.clock() == 15 and json.loads(copy.body)["failures"] == 0
    world.clock.advance(15)
    world.drain()
    assert len(world.written()) == 1


def test_a_401_takes_a_new_session_once(world):
    world.in_braze(email="unsubscribed")
    world.didomi.fail_next("401", path="/v1/consents/events")
    world.currents_arrive()
    assert len(world.written()) == 1 and len(world.didomi.sessions()) == 2
    world.in_braze(groups={SALES: "unsubscribed"})
    world.didomi.fail_next("401", "401", path="/v1/consents/events")
    world.currents_arrive()
    assert world.ingest.last_failures  # a second 401 is a failure: retried on the schedule


def test_a_rejected_write_is_parked_at_once_and_the_rest_of_the_file_is_written(world):
    config = parse_connector_document(
        json.dumps(
            connector_document(
                "http://127.0.0.1:9",
                mappings=[
                    {"id": "UNSUBSCRIBED", "value": "consents_purposes_retired_enabled"},  # no longer a purpose in Didomi
                    {"id": SALES, "value": SALES_VALUE},
                ],
            )
        ),
        allow_loopback=True,
    )
    world.deps.connector_source.config = config
    world.in_braze(email="unsubscribed", groups={SALES: "unsubscribed"})
    world.currents_arrive()
    [parked] = world.parked()
    assert parked.attributes["category"] == "didomi_rejected" and parked.attributes["last_didomi_status"] == "400"
    assert "is not a purpose of this organization" in parked.attributes["reason"]
    assert len(world.written()) == 1 and world.ingest_queues.retries.depth() == 0


def test_a_users_later_changes_wait_for_an_earlier_one_that_failed(world):
    world.flow.opt_ins = True
    world.didomi.fail_next("503", path="/v1/consents/events")
    world.in_braze(email="unsubscribed")
    world.clock.advance(1)
    world.in_braze(email="opted_in")
    world.currents_arrive()
    assert world.written() == []  # the opt-in is not written ahead of the unsubscribe it follows
    world.clock.advance(30)
    world.drain()
    assert [e["consents"]["purposes"][0]["enabled"] for e in world.written()] == [False, True]


def test_the_state_table_down_writes_nothing_and_the_message_comes_back(world):
    world.state.fail = lambda operation: operation == "read"
    world.in_braze(email="unsubscribed")
    world.currents_arrive()
    assert world.written() == [] and world.ingest.last_failures
    world.state.fail = lambda operation: False
    world.clock.advance(30)
    world.drain()
    assert len(world.written()) == 1


def test_s3_unreachable_comes_back_and_a_file_that_is_gone_or_not_avro_is_parked(world):
    world.files.fail = lambda key: True
    world.in_braze(email="unsubscribed")
    world.currents_arrive()
    assert world.ingest.last_failures and world.ingest_queues.retries.depth() == 1
    world.files.fail = lambda key: False
    world.clock.advance(30)
    world.drain()
    assert len(world.written()) == 1
    world.ingest.notify(BUCKET, ["currents/x/event_type=users.behaviors.subscription.GlobalStateChange/gone.avro"])
    key = currents_key("currents", GLOBAL_STATE_CHANGE, world.clock(), 999)
    world.files.put(BUCKET, key, b"this is not avro")
    world.ingest.notify(BUCKET, [key])
    world.drain()
    reasons = sorted(p.attributes["reason"] for p in world.parked())
    assert reasons[0].startswith("not an Avro file") and reasons[1].startswith("the file is gone")
    assert {p.attributes["category"] for p in world.parked()} == {"unreadable_file"}


def test_an_unreadable_record_is_parked_once_and_its_neighbours_are_written(world):
    good = currents_records(GLOBAL_STATE_CHANGE)[0]
    unreadable = {**good, "id": "bad-one", "subscription_status": ""}  # a required field, empty
    key = currents_key("currents", GLOBAL_STATE_CHANGE, world.clock(), 7)
    world.files.put(BUCKET, key, avro_file(GLOBAL_STATE_CHANGE, [good, unreadable]))
    world.didomi.fail_next("503", path="/v1/consents/events")  # the message comes back once, and the file is read again
    world.ingest.notify(BUCKET, [key])
    world.drain()
    world.clock.advance(30)
    world.drain()
    [parked] = world.parked()
    assert parked.attributes["category"] == "malformed_event" and "subscription_status is required" in parked.attributes["reason"]
    assert len(world.written()) == 1


def test_a_message_not_written_by_s3_or_the_connector_is_parked(world):
    world.ingest_queues.retries.send("hello")
    world.drain()
    [parked] = world.parked()
    assert parked.attributes["category"] == "malformed_message" and parked.body == "hello"


def test_out_of_time_continues_in_a_copy_without_spending_a_retry(world):
    world.ingest.timeout = 12  # the invocation's budget ends before the first user can be handled
    world.in_braze(email="unsubscribed")
    world.currents_arrive()
    assert world.ingest.last_failures == [] and world.counts["IngestDeferred"] >= 1
    world.ingest.timeout = 300
    world.drain()
    assert len(world.written()) == 1


def test_a_park_that_fails_leaves_the_message_on_the_queue(world):
    world.ingest_queues.fail = lambda operation: operation == "dead_letter"
    world.ingest_queues.retries.send("hello")
    world.ingest.poll()
    assert world.ingest.last_failures and world.ingest_queues.retries.depth() == 1


# -- Braze after a write-back ----------------------------------------------------------------------------------
def test_a_stale_didomi_value_that_reached_braze_after_the_unsubscribe_is_put_right(world):
    """Braze: unsubscribed at t1 by the user; then a Didomi opt-in dated t0 < t1 arrives late and the connector
    gives Braze opted_in. The Braze unsubscribe is newer: Didomi gets it, and so does Braze, again."""
    world.didomi.add_user("customer-42", {"purposes": [{"id": "newsletter", "enabled": True}], "channels": [], "vendors": {}})
    world.in_braze(email="unsubscribed", source="Subscription Page")  # t1 = 1_800_000_000 (2027-01-15T08:00:00Z)
    world.clock.advance(60)
    late = didomi_body("event-created")
    late["parameters"]["entity"]["created_at"] = "2027-01-15T07:59:00Z"  # t0: a minute before the unsubscribe
    world.in_didomi_webhook(late)
    assert world.braze.state(USER).email_subscribe == "opted_in"
    world.currents_arrive()
    assert world.didomi_value() is False
    assert world.braze.state(USER).email_subscribe == "unsubscribed"
    assert world.counts["CurrentsEventsSkipped.opt_in_disabled"] == 1  # the REST API opted_in, not an echo any more


def test_braze_failing_after_the_write_hands_its_update_to_the_retry_queue(world):
    _subscribed_in_didomi(world)
    world.in_braze(email="unsubscribed")
    world.braze.fail_next("503", "503")  # the request and its second try
    world.currents_arrive()
    assert len(world.written()) == 1 and world.ingest_queues.retries.depth() == 0
    [pending] = world.queues.retries.messages.values()
    assert PendingChange.from_json(pending.body).change.event_id.startswith("braze-currents:")
    world.clock.advance(30)
    world.retry_worker.poll()
    assert world.queues.retries.depth() == 0 and world.braze.state(USER).email_subscribe == "unsubscribed"


def test_every_configured_regulation_gets_the_change(world):
    counts = Counts()
    with metrics_to(counts):
        w = World(regulations=("gdpr", "cpra"))
        w.in_braze(email="unsubscribed")
        w.currents_arrive()
    assert sorted(e["regulation"] for e in w.written()) == ["cpra", "gdpr"]


def _records_of(world: World) -> list[dict]:
    return [record_of(c) for c in world.braze.subscription_changes if c.group_id is None]


def test_an_unreadable_didomi_secret_fails_the_batch_loudly_and_loses_nothing(world):
    from didomi_braze.adapters.didomi_api import DidomiClient
    from didomi_braze.domain.errors import ConfigurationError
    from sandbox.memory_flowback import MemoryDidomiTransport

    def unfilled(force: bool):
        raise ConfigurationError("Didomi secret arn:didomi: key is required (a Didomi API key)")

    world.flow.didomi = DidomiClient(
        unfilled, "https://api.didomi.io", MemoryDidomiTransport(world.didomi, world.clock), world.clock
    )
    world.in_braze(email="unsubscribed")
    with pytest.raises(ConfigurationError, match="key is required"):
        world.currents_arrive()
    assert world.ingest_queues.retries.depth() == 1 and not world.parked() and not world.didomi.events
