"""The flow back (service/flowback.py) under faults its tests do not inject, on the in-memory world of
tests/integration/test_flow_back.py."""

import pytest

from didomi_braze.observability import metrics_to
from tests.integration.test_flow_back import USER, Counts, World
from tests.samples import didomi_body


class Died(BaseException):
    """The invocation ends here (timeout, out of memory)."""


@pytest.fixture
def world():
    counts = Counts()
    with metrics_to(counts):
        w = World()
        w.counts = counts
        yield w


def _die_after_the_next_claim(world):
    claim = world.state.claim

    def claim_then_die(*args, **kwargs):
        claim(*args, **kwargs)
        world.state.claim = claim
        raise Died()

    world.state.claim = claim_then_die


def test_an_ingest_that_dies_after_merging_still_gives_braze_the_put_back_when_its_message_returns(world):
    """README "No echoes, no loops": when a Didomi update older than the Braze change reached Braze after it, the
    flow back "puts the newer choice back". If the ingest invocation dies between its claim (which writes the Braze
    change into the merged state) and the Braze call, the message comes back: the change, found merged at its own
    position, is written and delivered again (both idempotent), so Braze does not keep the stale opt-in."""
    world.braze.fail_next("503", "503")  # the request and its quick second try
    assert world.in_didomi_webhook(didomi_body("event-created"))["status"] == "queued"  # newsletter granted (2026)
    world.clock.advance(5)
    world.in_braze(email="unsubscribed", source="Subscription Page")  # the user unsubscribes in Braze (2027)
    world.clock.advance(30)
    world.retry_worker.poll()  # the queued 2026 opt-in reaches Braze after the user's unsubscribe
    assert world.braze.state(USER).email_subscribe == "opted_in"

    _die_after_the_next_claim(world)
    with pytest.raises(Died):
        world.currents_arrive()  # Didomi is written; the ingest dies after merging, before giving Braze the put-back
    assert world.didomi_value() is False

    world.clock.advance(1801)  # the ingest queue's visibility timeout: the message comes back
    world.drain()
    world.clock.advance(60)
    while world.retry_worker.poll():
        pass

    assert not world.parked() and not world.queues.dead_letters.messages
    assert world.braze.state(USER).email_subscribe == "unsubscribed", "Braze keeps an opt-in the user withdrew"
