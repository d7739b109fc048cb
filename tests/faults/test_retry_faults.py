"""The retry worker's counts and schedule (service/retry.py, domain/schedule.py) under faults the tests do not
combine, on the in-memory ports."""

from tests.faults.harness import World, record_call_times, run_worker
from tests.property.didomi_model import NEWSLETTER


def test_the_fifth_retry_of_a_braze_that_hangs_every_time_still_runs_within_five_minutes_of_delivery():
    """Every call hangs for Braze's whole timeout (7 s), the webhook's own included. The retries are due 30, 75, 130,
    195 and 270 s after the first failure, counted from it (not from when each failed retry settles, which would add
    each hang to the schedule): the fifth starts within 300 s of Didomi's delivery with a batching window to spare."""
    world = World()
    try:
        times = record_call_times(world)
        world.workspace.fail_next(*["hang"] * 6)
        world.didomi.consent("u0", {NEWSLETTER: False}, pending=False, regulation="gdpr")
        delivered_at = world.clock()
        assert world.post(world.didomi.outbox[0].body).body["status"] == "queued"
        run_worker(world, 400)

        assert len(times) == 6 and len(world.parked()) == 1
        fifth_retry = times[-1] - delivered_at
        assert fifth_retry <= 300 - 5, f"fifth retry {fifth_retry:.0f} s after delivery, before a batching window"
    finally:
        world.close()


def test_attempts_counts_braze_calls_not_receives_that_found_the_state_table_unreachable():
    """`attempts` is "Braze calls made, the webhook's own try included". A receive that found the state table
    unreachable called nothing: its failure travels in a fresh copy, so that the receive count stays a call count."""
    world = World()
    try:
        times = record_call_times(world)
        world.workspace.fail_next("503", "503")
        world.didomi.consent("u0", {NEWSLETTER: False}, pending=False, regulation="gdpr")
        assert world.post(world.didomi.outbox[0].body).body["status"] == "queued"  # Braze calls 1 and 2 (sent again)
        world.clock.advance(31)
        world.faults.armed = "claim_fails"
        assert world.worker.poll() == 1  # the state table is unreachable: no Braze call
        world.faults.armed = None
        world.workspace.fail_next("400")
        run_worker(world, 60)  # Braze call 3: rejected, parked

        [dead] = world.parked()
        assert len(times) == 3
        assert dead.attributes["attempts"] == "3", dead.attributes
    finally:
        world.close()
