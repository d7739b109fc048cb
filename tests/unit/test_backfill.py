"""Backfill's pure parts: reading a users file, a Didomi user mapped as a webhook would be, the run's checkpoint
and the worker's run counts carried by the message."""

import json
from dataclasses import replace
from decimal import Decimal

import pytest

from didomi_braze.domain.backfill import BackfillInputError, Checkpoint, read_users_file, user_change
from didomi_braze.domain.connector import parse_connector_document
from didomi_braze.domain.didomi import parse_webhook
from didomi_braze.domain.errors import InvalidWebhook
from didomi_braze.domain.mapping import Change, Skip, plan
from didomi_braze.domain.retry import PendingChange
from tests.samples import EVENTS, connector_document, didomi_body

USERS_FILE = EVENTS / "backfill-users.jsonl"
NEWSLETTER = "consents_purposes_newsletter_enabled"
SALES = "consents_purposes_offers_values_topics_sales_enabled"


@pytest.fixture
def config():
    return parse_connector_document(json.dumps(connector_document()))


def sample_users() -> list[dict]:
    return [user for _, user in read_users_file(USERS_FILE.read_text().splitlines(), USERS_FILE.name)]


# -- the users file ------------------------------------------------------------------------------------------------
def test_the_sample_export_reads_as_one_user_per_line_numbered_as_an_editor_shows_them():
    lines = ["", *USERS_FILE.read_text().splitlines()]  # a blank first line is skipped but still counted
    numbered = list(read_users_file(lines, "users.jsonl"))
    assert [n for n, _ in numbered] == [2, 3, 4, 5, 6]
    assert numbered[0][1]["organization_user_id"] == "customer-42"


def test_a_resumed_file_starts_after_the_checkpointed_line():
    lines = USERS_FILE.read_text().splitlines()
    assert [n for n, _ in read_users_file(lines, "users.jsonl", start_line=3)] == [4, 5]


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        ('{"id": "u-3", "consents": ', "users.jsonl line 3: not JSON (Expecting value at column 27)"),
        ('["not", "a", "user"]', "users.jsonl line 3: expected a Didomi user object, found list"),
        ('{"data": [], "limit": 100, "cursor": null}', "users.jsonl line 3: a page of users; write one user object per line"),
    ],
)
def test_a_bad_line_is_named_by_file_and_line_after_the_good_lines_before_it(bad, expected):
    lines = USERS_FILE.read_text().splitlines()[:2] + [bad] + USERS_FILE.read_text().splitlines()[2:]
    read = []
    with pytest.raises(BackfillInputError) as raised:
        for number, _ in read_users_file(lines, "users.jsonl"):
            read.append(number)
    assert str(raised.value).startswith(expected)
    assert read == [1, 2]


def test_a_pretty_printed_export_is_told_to_be_json_lines():
    with pytest.raises(BackfillInputError, match=r"line 1: not JSON .*one user object per line: JSON lines"):
        list(read_users_file(["[", "{}", "]"], "export.json"))


# -- one user, mapped as a webhook ---------------------------------------------------------------------------------
def test_a_user_carries_every_mapped_consent_at_its_own_updated_at_and_version(config):
    change = user_change(sample_users()[0], config, "gdpr")
    assert isinstance(change, Change)
    assert change.identity.key == "external_id:customer-42"
    assert {name: stored.value for name, stored in change.inputs.items()} == {NEWSLETTER: True, SALES: True}
    assert change.position.time == "2026-01-15T08:30:00.000000Z"
    assert change.position.version == Decimal(3)
    assert change.event_type == "backfill"
    assert change.event_id == "backfill:d1e4a7b2-0000-4000-8000-000000000001:v3"


def test_a_user_maps_exactly_as_the_user_created_webhook_with_the_same_entity_would(config):
    body = didomi_body("user-updated")
    entity = body["parameters"]["new_entity"]
    from_webhook = plan(parse_webhook({"type": "user.created", "parameters": {"entity": entity}}), config)
    from_backfill = user_change(entity, config, "gdpr")
    assert from_backfill.inputs == from_webhook.inputs
    assert from_backfill.identity == from_webhook.identity


@pytest.mark.parametrize(
    ("index", "reason"),
    [(3, "no_user_id"), (4, "no_change")],  # no organization_user_id; only an unmapped purpose
)
def test_a_user_with_nothing_for_braze_is_skipped_with_the_webhook_reason(config, index, reason):
    outcome = user_change(sample_users()[index], config, "gdpr")
    assert isinstance(outcome, Skip) and outcome.reason == reason


def test_a_regulation_the_connector_does_not_map_is_skipped(config):
    outcome = user_change(sample_users()[0], config, "cpra")
    assert isinstance(outcome, Skip) and outcome.reason == "regulation_not_configured"


def test_a_user_without_updated_at_cannot_take_a_position(config):
    user = sample_users()[0]
    del user["updated_at"]
    with pytest.raises(InvalidWebhook, match=r"updated_at is required"):
        user_change(user, config, "gdpr")


# -- the checkpoint ------------------------------------------------------------------------------------------------
def test_a_run_is_settled_only_when_reading_finished_and_every_queued_change_is_counted():
    checkpoint = Checkpoint("r1", "didomi-api", "gdpr", read=12, queued=10, not_sent=2)
    assert not replace(checkpoint, applied=7, skipped=2, parked=1).all_settled  # still reading
    finished = replace(checkpoint, finished=True)
    assert not replace(finished, applied=7, skipped=2).all_settled
    assert replace(finished, applied=7, skipped=2, parked=1).all_settled
    assert finished.key == "backfill#r1"
    assert replace(finished, applied=7, skipped=2, parked=1).progress() == (
        "run r1: 12 users read, 10 queued, 7 applied, 2 skipped, 1 parked (finished reading)"
    )


def test_the_message_carries_its_run_and_a_webhook_message_stays_as_it_was(config):
    change = user_change(sample_users()[0], config, "gdpr")
    tagged = PendingChange(change, None, "backfill", "2026-12-02T02:00:00.000000Z", run="r1")
    assert PendingChange.from_json(tagged.to_json()).run == "r1"
    untagged = PendingChange(change, None, "queued", "2026-12-02T02:00:00.000000Z")
    assert "run" not in json.loads(untagged.to_json())
    assert PendingChange.from_json(untagged.to_json()).run is None


def test_a_parked_backfill_message_no_longer_counts_for_its_run_when_replayed(config):
    change = user_change(sample_users()[0], config, "gdpr")
    parked = PendingChange(change, None, "backfill", "2026-12-02T02:00:00.000000Z", failures=5, run="r1")
    assert parked.ready_to_replay().run is None
