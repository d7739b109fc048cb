"""A batch of the worker holding two changes of one user with the same value: the older one's first delivery died
after its claim (merged, never sent to Braze), the newer one repeats the value. Judged on the newest change alone,
the batch would see "no change" and acknowledge both; the older change's redelivery must still be sent."""

from didomi_braze.domain.braze import RateWindow
from tests.faults.harness import World
from tests.property.didomi_model import MARKETING, NEWSLETTER


def _hand_off_everything(world: World) -> None:
    """Braze's window is spent for the next few seconds: the webhook queues every event for the batched worker."""
    world.deps.delivery.gauge.window = RateWindow(limit=1000, remaining=0, reset=world.clock() + 5)


def test_a_died_change_redelivered_in_one_batch_with_a_newer_change_of_the_same_value_still_reaches_braze():
    world = World()
    try:
        world.didomi.consent("u0", {MARKETING: True, NEWSLETTER: True}, pending=False, regulation="gdpr")
        for webhook in world.didomi.outbox:
            assert world.post(webhook.body).status == 200
        assert world.braze_fields("u0") == {"email_subscribe": "opted_in"}

        world.clock.advance(30)  # the delivered event's lease runs out on its own
        world.didomi.consent("u0", {NEWSLETTER: False}, pending=False, regulation="gdpr")
        died_event = world.didomi.outbox[2]
        assert world.post(died_event.body, "die_after_claim") is None  # merged, Braze never called
        world.clock.advance(30)  # the dead invocation's lease runs out
        world.didomi.consent("u0", {NEWSLETTER: False}, pending=False, regulation="gdpr")  # the same value again
        newer_event = world.didomi.outbox[4]

        _hand_off_everything(world)
        assert world.post(died_event.body).body["status"] == "queued"  # Didomi delivers the died change again
        assert world.post(newer_event.body).body["status"] == "queued"
        world.drain()

        assert world.parked() == []
        assert world.truth("u0") == {"email_subscribe": "unsubscribed"}
        assert world.braze_fields("u0") == world.truth("u0")
    finally:
        world.close()
