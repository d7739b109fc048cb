"""What the operator commands compute, without AWS: the timeline from recorded Logs Insights rows (in the format
CloudWatch returns them), the state record's description, and the replay dry run's judgement."""

import json
from decimal import Decimal

import pytest

from didomi_braze.domain.connector import parse_connector_document
from didomi_braze.domain.mapping import BrazeIdentity, Change
from didomi_braze.domain.ordering import Position, StoredInput
from didomi_braze.domain.ports import UserRecord
from didomi_braze.domain.retry import PendingChange
from didomi_braze_ops.aws import OperatorError
from didomi_braze_ops.replay import REDRIVEN, Parked, judge
from didomi_braze_ops.trace import SavedQuery, describe_record, parse_since, timeline
from sandbox.memory import MemoryStateStore
from tests.samples import EVENTS

WEBHOOK_GROUP, RETRY_GROUP = "/didomi-braze/webhook", "/didomi-braze/retry"
SOURCES = {WEBHOOK_GROUP: "webhook", RETRY_GROUP: "retry"}
NEWSLETTER = "consents_purposes_newsletter_enabled"
SALES_INPUT = "consents_purposes_offers_values_topics_sales_enabled"
SALES = "3f1c9a52-7d4e-4b8a-9c61-2e5f0a7b8d13"
CONFIG = parse_connector_document((EVENTS / "connector.json").read_text())


def row(at: str, group: str, **line) -> dict:
    """One Logs Insights result row, as CloudWatch returns it for the saved query."""
    return {"@timestamp": at, "@log": f"123456789012:{group}", "@message": json.dumps({"level": "INFO", **line})}


def test_the_timeline_is_ordered_and_says_what_became_of_each_event():
    rows = [
        row(
            "2026-05-04 12:00:31.002",
            RETRY_GROUP,
            message="retry failed; next retry scheduled",
            outcome="retry_failed",
            event_type="event.created",
            event_id="e1",
            receive=1,
            reason="braze server error (503)",
            braze_status=503,
            retry_in_seconds=45,
        ),
        row(
            "2026-05-04 12:00:01.500",
            WEBHOOK_GROUP,
            message="event queued for retry",
            outcome="queued",
            event_type="event.created",
            event_id="e1",
            event_time="2026-05-04T12:00:00.000000Z",
            reason="braze server error (503)",
            braze_status=503,
            retry_in_seconds=30,
        ),
        {"@timestamp": "2026-05-04 12:00:01.000", "@log": f"123456789012:{WEBHOOK_GROUP}", "@message": "START RequestId: 1"},
        row(
            "2026-05-04 12:01:16.000",
            RETRY_GROUP,
            message="event delivered after retry",
            outcome="delivered",
            event_type="event.created",
            event_id="e1",
            receive=2,
            braze_status=201,
            fields={"email_subscribe": "opted_in", f"group:{SALES}": "subscribed"},
        ),
    ]

    moments = timeline(rows, SOURCES)

    assert [m.source for m in moments] == ["webhook", "retry", "retry"]  # Lambda's own lines are left out
    assert [m.outcome for m in moments] == ["queued", "retry_failed", "delivered"]
    assert moments[0].text == (
        "received event.created e1 (change of 2026-05-04T12:00:00.000000Z): queued, retry in 30 s: "
        "braze server error (503) [Braze 503]"
    )
    assert (
        moments[1].text
        == "retry (receive 1) of event.created e1: failed: braze server error (503) [Braze 503]; next retry in 45 s"
    )
    assert moments[2].text == (
        "retry (receive 2) of event.created e1: delivered to Braze [Braze 201]: "
        f"email_subscribe=opted_in, group:{SALES}=subscribed"
    )


@pytest.mark.parametrize(
    ("line", "text"),
    [
        (
            {"outcome": "skipped", "event_type": "event.created", "reason": "pending", "detail": "not confirmed"},
            "received event.created: skipped (pending): not confirmed",
        ),
        (
            {
                "outcome": "dead_lettered",
                "event_type": "user.updated",
                "category": "braze_rejected",
                "reason": "400",
                "braze_status": 400,
            },
            "received user.updated: parked in the dead-letter queue (braze_rejected): 400 [Braze 400]",
        ),
        (
            {"outcome": "unavailable", "event_type": "user.updated", "cause": "state_table_unavailable", "problem": "throttled"},
            "received user.updated: not accepted (503, state_table_unavailable): throttled; Didomi delivers it again",
        ),
        (
            {"level": "ERROR", "message": "could not postpone a retry", "problem": "AccessDenied"},
            "error: could not postpone a retry: AccessDenied",
        ),
    ],
)
def test_each_kind_of_line_reads_as_a_sentence(line, text):
    [moment] = timeline([row("2026-05-04 12:00:00.000", WEBHOOK_GROUP, **line)], SOURCES)
    assert moment.text == text


def test_a_waiting_retry_is_not_shown_as_a_failure():
    [moment] = timeline(
        [
            row(
                "2026-05-04 12:00:00.000",
                RETRY_GROUP,
                outcome="waits",
                event_type="event.created",
                receive=1,
                reason="braze rate limit (429)",
                retry_in_seconds=12,
            )
        ],
        SOURCES,
    )
    assert moment.text == "retry (receive 1) of event.created: waits 12 s (not a failure): braze rate limit (429)"


def test_the_state_record_shows_each_input_its_position_what_it_calls_for_and_the_lease():
    user = Position("2026-05-02T09:15:22.300000Z", Decimal(7), "didomi-user-1")
    record = UserRecord(
        inputs={
            NEWSLETTER: StoredInput(False, user, quiet=True),
            SALES_INPUT: StoredInput(True, Position("2026-05-04T12:00:00.000000Z", None, "event-1")),
            "consents_purposes_retired_enabled": StoredInput(True, user),
        },
        revision=4,
        lease_owner="abc",
        lease_until=2_000_000_030.0,
        lease_event="event.created:event-2",
    )

    lines = describe_record(record, CONFIG, now=2_000_000_000.0)

    assert lines[0] == "State table record (revision 4): the merged Didomi inputs, newest known value of each"
    assert any(
        NEWSLETTER in line and "false  as of 2026-05-02T09:15:22.300000Z  (didomi-user-1 v7)  [quiet]" in line for line in lines
    )
    assert any("consents_purposes_retired_enabled" in line and "[not read by the mappings]" in line for line in lines)
    assert f"email_subscribe=unsubscribed, group:{SALES}=subscribed" in lines[-2]
    assert lines[-1].startswith("  lease: held until 2033-05-18T03:33:50Z for event.created:event-2")
    assert describe_record(record, CONFIG, now=2_000_000_031.0)[-1] == "  lease: ran out at 2033-05-18T03:33:50Z (free)"
    assert "no record for this user" in describe_record(None, CONFIG, now=0)[0]


@pytest.mark.parametrize(("text", "seconds"), [("30m", 1800), ("12h", 43200), ("7d", 604800)])
def test_since_takes_minutes_hours_or_days(text, seconds):
    assert parse_since(text) == seconds


@pytest.mark.parametrize("text", ["0d", "7", "1w", "-1d", "forever", ""])
def test_since_refuses_anything_else(text):
    with pytest.raises(OperatorError, match="give a duration"):
        parse_since(text)


def test_the_saved_query_takes_only_a_user_ref():
    saved = SavedQuery("q", 'fields @message | filter user_ref = "{{user_ref}}"', ("g",))
    assert saved.for_user("0123456789abcdef") == 'fields @message | filter user_ref = "0123456789abcdef"'
    with pytest.raises(ValueError):
        saved.for_user('" or 1=1 or "')  # nothing but the 16 hex digits reaches the query
    with pytest.raises(OperatorError, match="placeholder"):
        SavedQuery("q", "fields @message", ()).for_user("0123456789abcdef")


# -- the replay dry run -------------------------------------------------------------------------------------------
def parked(message_id: str, inputs: dict[str, bool], at: str, owed=None) -> Parked:
    position = Position(at, None, f"event-{message_id}")
    change = Change(
        BrazeIdentity("external_id", "customer-42"),
        {n: StoredInput(v, position) for n, v in inputs.items()},
        f"event.created:{message_id}",
        "event.created",
    )
    body = PendingChange(change, owed, "waits", "2026-05-04T12:00:00Z").to_json()
    return Parked(message_id, f"r-{message_id}", body, {"category": "retries_exhausted", "reason": "retries exhausted"})


def _state(inputs: dict[str, tuple[bool, str]], lease_until: float = 0.0) -> MemoryStateStore:
    store = MemoryStateStore()
    store.items[BrazeIdentity("external_id", "customer-42").state_key] = UserRecord(
        inputs={n: StoredInput(v, Position(at, None, "newer")) for n, (v, at) in inputs.items()},
        revision=3,
        lease_owner="someone" if lease_until else None,
        lease_until=lease_until,
    )
    return store


def test_a_parked_change_braze_has_since_had_newer_values_for_would_send_nothing():
    store = _state({NEWSLETTER: (False, "2026-05-05T00:00:00.000000Z")})
    [verdict] = judge([parked("m1", {NEWSLETTER: True}, "2026-05-04T12:00:00.000000Z")], store, CONFIG, str, now=0)
    assert verdict.request_object is None and verdict.why_not.startswith("superseded")
    assert store.writes == 0


def test_changes_of_one_user_are_judged_together_as_the_worker_merges_them():
    store = _state({})
    verdicts = judge(
        [
            parked("m1", {NEWSLETTER: True}, "2026-05-04T12:00:00.000000Z"),
            parked("m2", {NEWSLETTER: False, SALES_INPUT: True}, "2026-05-04T12:05:00.000000Z"),
        ],
        store,
        CONFIG,
        lambda key: "ref-of-" + key,
        now=0,
    )
    [verdict] = verdicts
    assert verdict.message_ids == ("m1", "m2") and verdict.user_ref == "ref-of-external_id:customer-42"
    assert verdict.request_object == {
        "external_id": "customer-42",
        "_update_existing_only": True,
        "email_subscribe": "unsubscribed",  # the newer of the two, never the older opt-in
        "subscription_groups": [{"subscription_group_id": SALES, "subscription_state": "subscribed"}],
    }
    assert store.writes == 0


def test_a_user_whose_lease_is_held_is_flagged():
    store = _state({}, lease_until=100.0)
    [verdict] = judge([parked("m1", {NEWSLETTER: True}, "2026-05-04T12:00:00.000000Z")], store, CONFIG, str, now=50.0)
    assert verdict.lease_until == 100.0 and verdict.request_object["email_subscribe"] == "opted_in"


def test_a_message_without_reason_attributes_is_the_redrive_backstop_s():
    message = Parked("m", "r", "{}", {})
    assert message.category == REDRIVEN and "redrive policy" in message.reason
