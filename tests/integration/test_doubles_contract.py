"""The in-memory doubles (sandbox/memory.py) against the real adapters: the same operations, the same results.

The property test and the simulation run the product on the doubles; these tests are what makes that count.
DynamoDB and SQS are moto (in-process, time frozen); Braze is the emulator over HTTP on 127.0.0.1.
"""

import json
from datetime import UTC, datetime
from decimal import Decimal

import boto3
import hypothesis.strategies as st
import pytest
from freezegun import freeze_time
from hypothesis import HealthCheck, given, settings
from moto import mock_aws

from didomi_braze.adapters.braze_client import BrazeClient
from didomi_braze.adapters.queues import Queues
from didomi_braze.adapters.state_table import StateTable
from didomi_braze.domain.braze import attributes_object
from didomi_braze.domain.mapping import BrazeIdentity
from didomi_braze.domain.ordering import Position, StoredInput
from didomi_braze.domain.ports import AtRevision, Claimed, DeadLetter, StoredOlder
from sandbox.braze_emulator import BrazeEmulator, BrazeWorkspace
from sandbox.memory import Clock, MemoryBraze, MemoryQueues, MemoryStateStore
from sandbox.template import provision
from tests.integration.conftest import REGION

T = ["2026-05-01T00:00:00.000000Z", "2026-05-02T00:00:00.000000Z", "2026-05-03T00:00:00.000000Z"]
POSITIONS = [Position(t, None, "ev") for t in T] + [Position(t, Decimal(v), "u") for t in T for v in (1, 2)]
NOW = 1_800_000_000.0


def _stack():
    sqs, secrets, dynamodb = (boto3.client(s, region_name=REGION) for s in ("sqs", "secretsmanager", "dynamodb"))
    return provision(sqs, secrets, dynamodb, webhook_token="t", connector_document="{}", region=REGION), sqs, dynamodb


# -- StateStore --------------------------------------------------------------------------------------------------
operation = st.one_of(
    st.tuples(
        st.just("claim"),
        st.sampled_from(["k1", "k2"]),
        st.dictionaries(st.sampled_from(["a", "b"]), st.tuples(st.booleans(), st.sampled_from(POSITIONS), st.booleans())),
        st.sampled_from([None, "o1", "o2"]),
        st.integers(0, 40),  # now, seconds after NOW
        st.one_of(st.just(None), st.integers(0, 4)),  # None: StoredOlder; n: AtRevision(n)
    ),
    st.tuples(st.just("release"), st.sampled_from(["k1", "k2"]), st.sampled_from(["o1", "o2"]), st.booleans()),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations=st.lists(operation, min_size=1, max_size=12))
def test_the_memory_state_store_answers_every_operation_as_the_dynamodb_adapter_does(operations):
    with mock_aws():
        stack, _, dynamodb = _stack()
        real, double = StateTable(dynamodb, stack.table_names["StateTable"]), MemoryStateStore()
        for op in operations:
            results = [_apply(store, op) for store in (real, double)]
            assert results[0] == results[1], (op, results)
        for key in ("k1", "k2"):
            assert _normal(real.read(key)) == _normal(double.read(key))


def _apply(store, op):
    if op[0] == "release":
        _, key, owner, quiet = op
        return store.release(key, owner, ("a",) if quiet else ())
    _, key, inputs, owner, seconds, revision = op
    carried = {n: StoredInput(v, p, q) for n, (v, p, q) in inputs.items()}
    expect = StoredOlder() if revision is None else AtRevision(revision)
    now = NOW + seconds
    result = store.claim(key, carried, owner, "event", now, now + 10, expect)
    return type(result).__name__, _normal(result.before if isinstance(result, Claimed) else result.current)


def _normal(record):
    return None if record is None else (record.inputs, record.revision, record.lease_owner, float(record.lease_until or 0))


def test_a_record_of_many_inputs_is_merged_on_its_revision_when_one_condition_cannot_hold_them_all():
    with mock_aws():
        stack, _, dynamodb = _stack()
        real = StateTable(dynamodb, stack.table_names["StateTable"])
        inputs = {f"consents_purposes_purpose_number_{i:03d}_enabled": StoredInput(True, POSITIONS[-1]) for i in range(40)}
        refused = real.claim("k", inputs, "o", "e", NOW, NOW + 10, StoredOlder())
        assert not isinstance(refused, Claimed) and refused.current.revision == 0  # read, not written
        claimed = real.claim("k", inputs, "o", "e", NOW, NOW + 10, AtRevision(refused.current.revision))
        assert isinstance(claimed, Claimed) and len(real.read("k").inputs) == 40


# -- RetryQueue / SQS --------------------------------------------------------------------------------------------
def test_the_memory_queue_keeps_sqs_delays_visibility_receive_counts_and_redrive():
    start = datetime.fromtimestamp(NOW, tz=UTC)
    with mock_aws(), freeze_time(start) as frozen:
        stack, sqs, _ = _stack()
        real = Queues(lambda: sqs, stack.retry_queue_url, stack.dead_letter_queue_url)
        clock = Clock(NOW)
        double = MemoryQueues(clock)
        seen_real, seen_double = [], []

        def receive_both():
            got = sqs.receive_message(QueueUrl=stack.retry_queue_url, MaxNumberOfMessages=10, AttributeNames=["All"]).get(
                "Messages", []
            )
            seen_real.append(sorted((m["Body"], int(m["Attributes"]["ApproximateReceiveCount"])) for m in got))
            mine = double.retries.receive(10)
            seen_double.append(sorted((m.body, m.receive_count) for m in mine))
            return got, mine

        def tick(seconds):
            frozen.tick(seconds)
            clock.advance(seconds)

        for store in (real, double):
            store.enqueue("later", 30)
            store.enqueue("now", 0)
        receive_both()  # only "now"
        tick(31)
        got, mine = receive_both()  # "later"; "now" is in flight for the queue's visibility timeout (360 s)
        for m in got:
            real.postpone(m["ReceiptHandle"], 45)
        for m in mine:
            double.postpone(m.receipt, 45)
        tick(46)
        receive_both()  # "later" again, its second receive
        tick(361)
        for _ in range(12):  # the redrive policy moves each after its tenth receive
            receive_both()
            tick(361)
        assert seen_real == seen_double
        dead = sqs.receive_message(QueueUrl=stack.dead_letter_queue_url, MaxNumberOfMessages=10).get("Messages", [])
        assert sorted(m["Body"] for m in dead) == sorted(m.body for m in double.dead_letters.messages.values())

        why = DeadLetter("braze rejected the object: bad", 2, "2026-05-04T12:00:00Z", 400, "e", "braze_rejected")
        real.dead_letter("x", why)
        double.dead_letter("x", why)
        [parked] = [
            m
            for m in sqs.receive_message(
                QueueUrl=stack.dead_letter_queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
            )["Messages"]
            if m["Body"] == "x"
        ]
        [mine_parked] = [m for m in double.dead_letters.messages.values() if m.body == "x"]
        assert {k: v["StringValue"] for k, v in parked["MessageAttributes"].items()} == mine_parked.attributes


# -- BrazeApi ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fault", [None, "500", "503", "429", "401", "400", "item_error", "hang"])
@pytest.mark.parametrize("limit", [None, 1])
def test_the_memory_braze_answers_as_the_client_does_against_the_emulator(fault, limit):
    objects = [
        attributes_object(BrazeIdentity("external_id", user), {"email_subscribe": "opted_in"}, upsert_mode=False)
        for user in ("a", "b")
    ]
    known = ("external_id:a", "external_id:b")
    outcomes, states = [], []
    with BrazeEmulator(known_users=known, hang_seconds=0.6, requests_per_window=limit, window_seconds=3600) as emulator:
        workspace = BrazeWorkspace(known_users=known, requests_per_window=limit, window_seconds=3600)
        client = BrazeClient(connect_timeout=1, read_timeout=0.3)
        double = MemoryBraze(workspace, Clock(), timeout_seconds=1.3)
        for braze, track in ((emulator, lambda o: client.track(emulator.url, "local-braze-api-key", o)), (workspace, None)):
            for _ in range(2):  # the second call meets the rate limit, when there is one
                if fault:
                    braze.fail_next(fault)
                outcomes.append(track(objects) if track else double.track("http://unused", "local-braze-api-key", objects))
            states.append({k: (u.email_subscribe, u.updates) for k, u in braze.users.items()})
    real, mine = outcomes[:2], outcomes[2:]
    for a, b in zip(real, mine, strict=True):
        assert (a.kind, a.status, a.item_errors, a.refresh_credentials) == (
            b.kind,
            b.status,
            b.item_errors,
            b.refresh_credentials,
        )
        assert (a.retry_at is None) == (b.retry_at is None)
    assert states[0] == states[1]
    assert json.dumps(objects)  # the same bodies went to both
