"""The quiet mark (ordering.StoredInput.quiet) is written by the lease's release, a second round trip that may fail
after the event was answered 2xx. A fact stored without its quiet mark vouches for a Braze call that never happened,
and the redelivery of the change it rests on is then judged `superseded`."""

from tests.property.didomi_model import NEWSLETTER
from tests.review.harness import World


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
