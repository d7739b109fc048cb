"""Property: whatever the interleaving of Didomi deliveries (in any order, some twice), Braze failures and
retries, each user ends with the state of their newest event that was not dead-lettered."""

import collections
import json
from datetime import UTC, datetime

from freezegun import freeze_time
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sandbox.braze_emulator import BrazeEmulator
from sandbox.lambda_runtime import RetryQueuePoller
from tests.integration.conftest import REGION, call_webhook, local_aws
from tests.integration.test_ordering import consent_event
from tests.samples import BRAZE_API_KEY

USERS = ("p-0", "p-1", "p-2")
FAULTS = (None, None, None, "503", "hang", "429", "item_error")

events = st.lists(
    st.tuples(st.sampled_from(USERS), st.integers(0, 59), st.booleans()), min_size=1, max_size=8, unique_by=lambda e: e[:2]
)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("deliver"), st.integers(0, 7), st.sampled_from(FAULTS)),
        st.tuples(st.just("wait"), st.integers(1, 90), st.none()),
    ),
    min_size=1,
    max_size=20,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=events, steps=steps)
def test_each_user_ends_with_their_newest_event_that_was_not_dead_lettered(events, steps):
    with (
        BrazeEmulator(api_key=BRAZE_API_KEY, known_users=tuple(f"external_id:{u}" for u in USERS), hang_seconds=0.7) as braze,
        local_aws(braze.url) as aws,
        freeze_time(datetime.now(UTC)) as clock,
    ):
        worker = RetryQueuePoller(aws.sqs, aws.retry_queue, aws.stack.function("RetryFunction"), REGION, wait_seconds=0)
        braze.rate_limit_reset_in = 5
        attempts = collections.Counter()  # deliveries that were not skipped, per event
        for kind, value, fault in steps:
            if kind == "wait":
                _run(clock, worker, value)
                continue
            user, minute, newsletter = events[value % len(events)]
            if fault:
                braze.fail_next(fault)
            status, answer = call_webhook(consent_event(minute, newsletter, user=user))
            assert status in (200, 202), answer
            if answer["status"] != "skipped":
                attempts[(user, minute)] += 1
        _run(clock, worker, 400)  # every retry has run out by now

        parked = collections.Counter()
        for message in aws.messages(aws.dead_letter_queue):
            body = json.loads(message["Body"])
            parked[(body["identity"]["value"], int(body["order_key"][14:16]))] += 1
        assert aws.messages(aws.retry_queue) == []

    for user in USERS:
        made_it = [(m, n) for (u, m, n) in events if u == user and attempts[(u, m)] > parked[(u, m)]]
        expected = ("opted_in" if max(made_it)[1] else "unsubscribed") if made_it else None
        assert braze.state(f"external_id:{user}").email_subscribe == expected, (user, events, steps)


def _run(clock, worker, seconds):
    for _ in range(seconds):
        clock.tick(1)
        while worker.poll_once(wait_seconds=0):
            pass
