"""The retry schedule, the retry message, and grouping a batch by user."""

import itertools
import json
import random

import pytest

from didomi_braze.domain.errors import ConfigurationError, MalformedRetryMessage
from didomi_braze.domain.mapping import BrazeIdentity, Change
from didomi_braze.domain.ordering import Position, StoredInput
from didomi_braze.domain.retry import PendingChange, by_user
from didomi_braze.domain.schedule import RetrySchedule


def test_default_schedule_retries_five_times_the_fifth_270_s_after_the_first_failure():
    # 30 s of slack for the batching window and polling keeps the fifth retry inside Didomi's five minutes
    schedule = RetrySchedule.parse(None)
    delays = [schedule.delay_after_failure(n) for n in range(1, 6)]
    assert list(itertools.accumulate(delays)) == [30, 75, 130, 195, 270]
    assert schedule.delay_after_failure(6) is None and schedule.delay_after_failure(0) is None


def test_waiting_for_a_rate_limit_reset_or_a_lease_is_at_least_one_second_and_at_most_900():
    assert RetrySchedule.wait_until(1100, now=1000) == 100
    assert RetrySchedule.wait_until(1000.2, now=1000) == 1
    assert RetrySchedule.wait_until(999, now=1000) == 1
    assert RetrySchedule.wait_until(1000 + 5000, now=1000) == 900
    assert RetrySchedule.wait_until(None, now=1000, at_least=30) == 30


def test_a_change_that_found_the_user_busy_looks_again_after_2_to_5_s_or_when_the_lease_runs_out_if_sooner():
    # A worker's lease covers its whole invocation but is given back when its batch is done: waiting for the lease
    # to run out would hold the change back for a minute.
    rng = random.Random(7)
    delays = {RetrySchedule.relook_when_busy(1062, now=1000, rng=rng) for _ in range(200)}
    assert delays == {2, 3, 4, 5}
    assert RetrySchedule.relook_when_busy(1001.5, now=1000, rng=rng) == 2
    assert RetrySchedule.relook_when_busy(999, now=1000, rng=rng) == 1
    assert RetrySchedule.relook_when_busy(None, now=1000, rng=rng) == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("30,45,60,75", "needs 5 to 9 delays"),
        ("1,1,1,1,1,1,1,1,1,1", "needs 5 to 9 delays"),
        ("30,45,sixty,75,90", "comma-separated whole seconds"),
        ("30,45,60,75,901", "between 1 and 900"),
        ("0,45,60,75,90", "between 1 and 900"),
    ],
)
def test_invalid_schedules_are_refused_with_a_clear_message(text, message):
    with pytest.raises(ConfigurationError, match=message):
        RetrySchedule.parse(text)


POSITION = Position("2026-05-02T09:15:22.300000Z", None, "ev-1")


def _pending(user="customer-42", owed=("email_subscribe",), **counts) -> PendingChange:
    change = Change(
        BrazeIdentity("external_id", user),
        {"consents_purposes_newsletter_enabled": StoredInput(False, POSITION)},
        "event.created:ev-1",
        "event.created",
    )
    return PendingChange(change, owed, "braze server error (503)", "2026-05-02T09:15:23.000000Z", **counts)


def test_a_retry_message_carries_the_change_not_a_braze_update_and_survives_json():
    pending = _pending(failures=2, calls=3, first_failure_at="2026-05-02T09:15:23.000000Z")
    assert PendingChange.from_json(pending.to_json()) == pending
    body = json.loads(pending.to_json())
    assert body["inputs"] == {"consents_purposes_newsletter_enabled": False} and "email_subscribe" not in body["inputs"]


def test_a_parked_body_starts_a_fresh_schedule_when_replayed():
    parked = _pending(failures=6, calls=6, first_failure_at="x").ready_to_replay()
    assert (parked.failures, parked.calls, parked.first_failure_at) == (0, 0, None)


def _tampered(**changes) -> str:
    body = json.loads(_pending().to_json())
    body.update(changes)
    return json.dumps(body)


@pytest.mark.parametrize(
    "body",
    [
        "",
        "not json",
        "[]",
        '{"version": 1}',
        _tampered(version=1),
        _tampered(identity={"kind": "braze_id", "value": "x"}),
        _tampered(identity={"kind": "external_id", "value": ""}),
        _tampered(inputs={}),
        _tampered(inputs={"x": "yes"}),
        _tampered(failures=-1),
        _tampered(position={"time": "t"} | {"version": "seven"}),
    ],
)
def test_a_message_this_connector_did_not_write_is_malformed(body):
    with pytest.raises(MalformedRetryMessage):
        PendingChange.from_json(body)


def test_a_batch_groups_by_user_keeping_every_change_and_what_failed_calls_owe():
    messages = [("m1", _pending("a")), ("m2", _pending("b", owed=None)), ("m3", _pending("a", owed=("group:g",)))]
    work = {w.identity.value: w for w in by_user(messages)}
    assert work["a"].tags == ["m1", "m3"] and len(work["a"].changes) == 2
    assert work["a"].owed == {"email_subscribe", "group:g"}
    assert work["a"].judged == []  # both said what they owe
    assert work["b"].owed == set() and len(work["b"].judged) == 1  # judged by the merge, like a webhook


def test_a_change_stored_at_its_own_position_is_seen_again_even_beside_a_newer_change_of_the_same_input():
    name = "consents_purposes_newsletter_enabled"
    older, newer = Position("2026-05-04T12:00:00.000001Z", entity="ev-1"), Position("2026-05-04T12:00:00.000002Z", entity="ev-2")
    user = BrazeIdentity("external_id", "customer-42")
    died = Change(user, {name: StoredInput(False, older)}, "event.created:ev-1", "event.created")
    again = Change(user, {name: StoredInput(False, newer)}, "event.created:ev-2", "event.created")
    stored = {name: StoredInput(False, older)}  # the first delivery merged it, then died before Braze

    judged = by_user([("m1", PendingChange(died, None, "", "t")), ("m2", PendingChange(again, None, "", "t"))])[0]
    assert judged.seen_again(stored) == {name}
    owing = by_user([("m1", PendingChange(died, ("email_subscribe",), "", "t")), ("m2", PendingChange(again, None, "", "t"))])[0]
    assert owing.seen_again(stored) == set() and owing.owed == {"email_subscribe"}  # what it owes is said already
    assert judged.seen_again({name: StoredInput(False, Position("2026-05-04T12:00:00.000003Z", entity="ev-3"))}) == set()
