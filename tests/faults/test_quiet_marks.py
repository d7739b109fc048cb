"""The quiet mark (ordering.StoredInput.quiet): a fact merged by a claim that did not send its fields must not vouch
for a Braze call that never happened, or the redelivery of an older change of the same value, whose first delivery
died, would be judged `superseded`. The mark is written when the lease is given back; when that write fails, the
fields are queued as owed instead."""

from tests.faults.harness import World
from tests.property.didomi_model import NEWSLETTER, SALES


def test_when_the_quiet_mark_cannot_be_written_the_fields_are_owed_and_the_opt_out_reaches_braze():
    world = World()
    try:
        world.didomi.consent("u0", {NEWSLETTER: False}, pending=False, regulation="gdpr")
        event_created, user_created = world.didomi.outbox  # one change, two webhooks; the event's position is newer
        assert world.post(user_created.body, "die_after_claim") is None
        world.clock.advance(30)  # the dead invocation's lease runs out
        answer = world.post(event_created.body, "release_fails")  # nothing new for Braze: stored quiet... by the release
        assert answer.status == 200 and answer.body["reason"] == "no_change"
        answer = world.post(user_created.body)  # Didomi delivers the change whose first delivery died again
        assert answer.status in (200, 202)
        world.drain()

        assert world.parked() == []
        assert world.braze_fields("u0") == world.truth("u0") == {"email_subscribe": "unsubscribed"}
    finally:
        world.close()


def test_a_repeated_value_sent_with_another_consent_is_stored_quiet_so_the_died_change_is_sent_on_redelivery():
    """One invocation dies after its claim, then a later event sets the same value again together with another
    consent. Its claim sends only the other consent's field, so it stores the repeated value as quiet (one more
    write, on this path only): the redelivery of the change whose first delivery died is sent again."""
    world = World()
    try:
        world.didomi.consent("u0", {NEWSLETTER: False}, pending=False, regulation="gdpr")
        first_event, first_user = world.didomi.outbox
        assert world.post(first_user.body, "die_after_claim") is None  # the opt-out is merged, Braze never called
        world.clock.advance(30)
        world.didomi.consent("u0", {NEWSLETTER: False, SALES: True}, pending=False, regulation="gdpr")
        second_event, second_user = world.didomi.outbox[2:]
        assert world.post(second_event.body).body["status"] == "delivered"  # sends the group only
        assert world.post(second_user.body).status == 200
        for webhook in (first_user, first_event):  # Didomi delivers the first change (both webhooks) again
            assert world.post(webhook.body).status in (200, 202)
        world.drain()

        assert world.parked() == []
        assert world.braze_fields("u0") == world.truth("u0")
    finally:
        world.close()
