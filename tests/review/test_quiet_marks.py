"""The quiet mark (ordering.StoredInput.quiet) is written by the lease's release, a second round trip that may fail
after the event was answered 2xx. A fact stored without its quiet mark vouches for a Braze call that never happened,
and the redelivery of the change it rests on is then judged `superseded`."""

from tests.property.didomi_model import NEWSLETTER, SALES
from tests.review.harness import World, hole


@hole
def test_a_failed_release_loses_the_quiet_mark_and_an_opt_out_never_reaches_braze():
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


@hole
def test_an_input_whose_field_was_not_sent_is_stored_loud_and_supersedes_the_change_braze_still_waits_for():
    """No AWS fault at all: one invocation dies after its claim (the model's `die_after_claim`), then a later event
    sets the same value again together with another consent. The claim sends only the other consent's field, but
    stores the repeated value without the quiet mark (only `_nothing_to_send` marks quiet), so the redelivery of the
    change whose first delivery died is judged `superseded`."""
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
