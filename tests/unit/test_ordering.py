"""The per-field ordering rule: an older value never replaces a newer one; the same event twice is a duplicate."""

from didomi_braze.domain.mapping import BrazeUpdate
from didomi_braze.domain.ordering import DUPLICATE, SUPERSEDED, fields_of, judge, position, update_from_fields

OLD, MID, NEW = (
    position("2026-05-01T00:00:00.000000Z|000000000001", "a"),
    position("2026-05-02T00:00:00.000000Z|000000000001", "b"),
    position("2026-05-03T00:00:00.000000Z|000000000000", "c"),
)
UPDATE = BrazeUpdate("opted_in", {"g1": "subscribed"})


def _all(pos):
    return dict.fromkeys(fields_of(UPDATE), pos)


def test_fields_round_trip():
    assert update_from_fields(fields_of(UPDATE)) == UPDATE


def test_a_first_update_for_a_user_is_sent_whole():
    verdict = judge(UPDATE, _all(MID), {}, retry=False)
    assert verdict.send == UPDATE and verdict.positions == _all(MID) and not verdict.is_skip


def test_an_update_older_than_every_stored_field_is_superseded():
    verdict = judge(UPDATE, _all(OLD), _all(NEW), retry=False)
    assert verdict.skip_reason == SUPERSEDED and verdict.send.is_empty()


def test_only_the_fields_with_no_newer_value_are_sent():
    # a newer event set the email state; this older one still carries a subscription group nobody changed since
    verdict = judge(UPDATE, _all(MID), {"email_subscribe": NEW}, retry=False)
    assert verdict.send == BrazeUpdate(None, {"g1": "subscribed"})
    assert verdict.dropped == ("email_subscribe",)


def test_the_same_event_again_is_a_duplicate_on_the_webhook_but_resent_on_a_retry():
    assert judge(UPDATE, _all(MID), _all(MID), retry=False).skip_reason == DUPLICATE
    assert judge(UPDATE, _all(MID), _all(MID), retry=True).send == UPDATE


def test_positions_of_a_later_time_sort_after_whatever_the_event_id():
    assert position("2026-05-02T00:00:00.000000Z|000000000000", "zzz") < position("2026-05-02T00:00:00.000001Z|000000000000", "a")
    assert position("2026-05-02T00:00:00.000000Z|000000000004", "z") < position("2026-05-02T00:00:00.000000Z|000000000005", "a")
