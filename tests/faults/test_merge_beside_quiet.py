"""A change that merges beside another invocation's lease repeats a value the holder is sending and changes another
field. The holder's call fails and is retried later, after the newer change's own delivery. The repeated value's
fact must not vouch for a Braze call that never succeeded, neither as merged beside the lease nor once the newer
change is delivered again: the field it drives is still sent by the holder's retry (the burst simulation's lost
`email_subscribe`, seed 2 at full size)."""

from didomi_braze.domain.braze import RateWindow
from tests.faults.harness import World
from tests.property.didomi_model import GROUP, NEWSLETTER, SALES


def test_a_repeated_value_merged_beside_a_failing_holder_still_reaches_braze_through_the_holders_retry():
    world = World()
    try:
        # The first change is handed to the batched worker (Braze's window is spent for a few seconds).
        world.deps.delivery.gauge.window = RateWindow(limit=1000, remaining=0, reset=world.clock() + 5)
        world.didomi.consent("u0", {NEWSLETTER: True}, pending=False, regulation="gdpr")
        first = world.didomi.outbox[0]  # event.created (the user.* webhooks are not posted: only consent events)
        assert world.post(first.body).body["status"] == "queued"

        # A newer change repeats the newsletter value and sets the sales topic. It arrives while the worker holds
        # the user's lease and waits for Braze, which then refuses the worker's call with 401 (a failure made of one
        # call: its message comes back as it is, the fields it owes judged again by the merge).
        world.didomi.consent("u0", {NEWSLETTER: True, SALES: False}, pending=False, regulation="gdpr")
        second = world.didomi.outbox[2]
        track, answers = world.deps.delivery.braze.track, []

        def second_arrives_during_the_call(*args, **kwargs):
            if not answers:
                answers.append(world.post(second.body))
                world.workspace.fail_next("401")
            return track(*args, **kwargs)

        world.deps.delivery.braze.track = second_arrives_during_the_call
        world.clock.advance(10)
        assert world.worker.poll()
        assert answers[0].body["status"] == "queued"  # merged beside the lease; the group field is owed
        assert world.braze_fields("u0") == {}  # the worker's call failed

        # The newer change looks again within seconds and delivers the group field; it must leave the repeated
        # value's mark as it found it. The older change's retry comes 30 s after its failure.
        world.clock.advance(6)
        while world.worker.poll():
            pass
        assert world.braze_fields("u0") == {f"group:{GROUP}": "unsubscribed"}
        world.drain()

        assert world.parked() == []
        assert world.truth("u0") == {"email_subscribe": "subscribed", f"group:{GROUP}": "unsubscribed"}
        assert world.braze_fields("u0") == world.truth("u0")
    finally:
        world.close()
