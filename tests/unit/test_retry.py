"""The retry schedule, the retry message, and collapsing a batch into few Braze objects."""

import itertools

import pytest

from didomi_braze.domain.errors import ConfigurationError, MalformedRetryMessage
from didomi_braze.domain.mapping import BrazeIdentity, BrazeUpdate
from didomi_braze.domain.retry import PendingUpdate, chunks, collapse
from didomi_braze.domain.schedule import RetrySchedule


def test_default_schedule_retries_five_times_the_last_300_s_after_the_first_failure():
    schedule = RetrySchedule.parse(None)
    delays = [schedule.first_delay(0)] + [schedule.delay_after(k, 0) for k in range(1, 5)]
    assert list(itertools.accumulate(delays)) == [30, 75, 135, 210, 300]
    assert schedule.delay_after(5, 0) is None


def test_a_rate_limit_reset_pushes_the_next_retry_later_never_earlier_and_caps_at_900_s():
    schedule = RetrySchedule.parse("30,45,60,75,90")
    assert schedule.first_delay(now=1000, retry_at=1100) == 100
    assert schedule.first_delay(now=1000, retry_at=1001) == 30
    assert schedule.delay_after(2, now=1000, retry_at=1000 + 5000) == 900
    assert schedule.delay_after(1, now=1000, retry_at=1044.2) == 45


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


def _pending(user, order, email=None, groups=None, event="e"):
    return PendingUpdate(
        event,
        "user.updated",
        BrazeIdentity("external_id", user),
        BrazeUpdate(email, groups or {}),
        order,
        "2026-05-02T09:15:22.000000Z",
        "braze server error (503)",
    )


def test_a_retry_message_survives_the_round_trip_through_json():
    pending = _pending("customer-42", "2026|7", "opted_in", {"g": "subscribed"})
    assert PendingUpdate.from_json(pending.to_json()) == pending


@pytest.mark.parametrize(
    "body",
    [
        "",
        "not json",
        "[]",
        '{"version": 1}',
        '{"version": 2, "event_id": "e"}',
        _pending("u", "1").to_json().replace('"external_id"', '"braze_id"'),
        _pending("u", "1").to_json(),
    ],  # no update at all
)
def test_a_message_this_connector_did_not_write_is_malformed(body):
    with pytest.raises(MalformedRetryMessage):
        PendingUpdate.from_json(body)


def test_updates_of_one_user_collapse_into_one_object_with_the_newest_value_of_each_field():
    messages = [
        ("m2", _pending("a", "2026-05-02|2", "unsubscribed")),
        ("m1", _pending("a", "2026-05-01|1", "opted_in", {"g1": "subscribed"})),
        ("m3", _pending("b", "2026-05-01|1", "opted_in")),
    ]
    items = {item.identity.value: item for item in collapse(messages)}
    assert len(items) == 2
    assert items["a"].update == BrazeUpdate("unsubscribed", {"g1": "subscribed"})
    assert items["a"].message_ids == ("m1", "m2")
    assert items["b"].message_ids == ("m3",)


def test_chunks_never_exceed_the_request_size():
    items = collapse([(f"m{i}", _pending(f"u{i}", "1", "opted_in")) for i in range(120)])
    assert [len(c) for c in chunks(items, 50)] == [50, 50, 20]
