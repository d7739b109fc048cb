"""The retry worker's counts and schedule (service/retry.py, domain/schedule.py) under faults the tests do not
combine, on the in-memory ports."""

from tests.property.didomi_model import NEWSLETTER
from tests.review.harness import World, hole


def _record_call_times(world):
    times = []
    track = world.braze.track

    def timed(*args, **kwargs):
        times.append(world.clock())
        return track(*args, **kwargs)

    world.braze.track = timed
    return times


def _run(world, seconds):
    for _ in range(seconds):
        world.clock.advance(1)
        while world.worker.poll():
            pass


@hole
def test_the_fifth_retry_of_a_braze_that_hangs_runs_after_didomis_five_minutes():
    """README: "the five retries run 30, 75, 130, 195 and 270 s after the first failure: the batching window (5 s)
    and polling add at most 30 s". Each delay is counted from when the failed retry settles, so every hung call adds
    Braze's whole timeout (7 s) to the schedule: even with the worker polling every second and no batching window,
    the fifth retry starts 298 s after the first failure and 305 s after Didomi's delivery."""
    world = World()
    try:
        times = _record_call_times(world)
        world.workspace.fail_next(*["hang"] * 6)
        world.didomi.consent("u0", {NEWSLETTER: False}, pending=False, regulation="gdpr")
        delivered_at = world.clock()
        assert world.post(world.didomi.outbox[0].body).body["status"] == "queued"
        _run(world, 400)

        assert len(times) == 6 and len(world.parked()) == 1
        fifth_retry = times[-1] - delivered_at
        assert fifth_retry <= 300 - 5 * 5, f"fifth retry {fifth_retry:.0f} s after delivery, before batching windows"
    finally:
        world.close()


@hole
def test_a_parked_message_counts_a_state_table_outage_as_a_braze_call():
    """`attempts` is "Braze calls made, the webhook's own try included". The worker computes it as the message's
    receive count, assuming every earlier receive called Braze; a receive that found the state table unreachable
    called nothing."""
    world = World()
    try:
        times = _record_call_times(world)
        world.workspace.fail_next("503")
        world.didomi.consent("u0", {NEWSLETTER: False}, pending=False, regulation="gdpr")
        assert world.post(world.didomi.outbox[0].body).body["status"] == "queued"  # Braze call 1
        world.clock.advance(31)
        world.faults.armed = "claim_fails"
        assert world.worker.poll() == 1  # the state table is unreachable: no Braze call
        world.faults.armed = None
        world.workspace.fail_next("400")
        _run(world, 60)  # Braze call 2: rejected, parked

        [dead] = world.parked()
        assert len(times) == 2
        assert dead.attributes["attempts"] == "2", dead.attributes
    finally:
        world.close()
