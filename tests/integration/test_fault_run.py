"""A fault run: 1,000 events through the webhook and the retry worker while Braze fails a seeded random 30%
of calls (5xx, 429, per-item errors, and hangs past the client's timeout after applying the update). Every
event must end applied in Braze or parked in the dead-letter queue with a reason: none lost. Only an update
whose answer was lost (a hang) may be applied twice, with the same value, or be both applied and parked."""

import collections
import json
from datetime import UTC, datetime

from freezegun import freeze_time

from tests.integration.conftest import call_webhook, event_for

EVENTS = 1000
FAULTS = ("500", "503", "429", "hang", "item_error")


def test_every_event_ends_applied_once_or_parked_with_a_reason(aws, braze, worker, monkeypatch, capsys):
    from didomi_braze import runtime

    monkeypatch.setenv("BRAZE_READ_TIMEOUT_SECONDS", "0.1")
    runtime.dependencies.cache_clear()
    braze.hang_seconds = 0.3
    users = [f"fault-user-{i:04d}" for i in range(EVENTS)]
    for user in users:
        braze.add_user(f"external_id:{user}")
    braze.fail_randomly(rate=0.3, seed=2026, faults=FAULTS)

    with freeze_time(datetime.now(UTC)) as clock:
        # Events arrive 10 a second while the worker drains the queue, so retries meet faults too.
        answers: collections.Counter = collections.Counter()
        invocations = 0
        for second in range(EVENTS // 10 + 400):  # then 400 s more: past the last retry and any 429 wait
            for user in users[second * 10 : second * 10 + 10]:
                status, body = call_webhook(event_for(user))
                answers[(status, body["status"])] += 1
            clock.tick(1)
            while worker.poll_once(wait_seconds=0):
                invocations += 1
        dead = {
            json.loads(m["Body"])["identity"]["value"]: {k: v["StringValue"] for k, v in m["MessageAttributes"].items()}
            for m in aws.messages(aws.dead_letter_queue)
        }
        left_on_retry_queue = aws.messages(aws.retry_queue)

    applied = {u: braze.state(f"external_id:{u}").updates for u in users}
    state = {u: braze.state(f"external_id:{u}").email_subscribe for u in users}
    injected = collections.Counter(r.fault for r in braze.track_requests() if r.fault)
    hung = {o["external_id"] for r in braze.track_requests() if r.fault == "hang" for o in r.body["attributes"]}
    with capsys.disabled():
        print(
            f"\nfault run: {EVENTS} events; webhook answers {dict(answers)}; Braze calls {len(braze.track_requests())} "
            f"with injected faults {dict(injected)}; worker invocations {invocations}; "
            f"applied once {sum(1 for n in applied.values() if n == 1)}, again after a lost answer "
            f"{sum(1 for n in applied.values() if n > 1)}; dead-lettered {len(dead)}; "
            f"dead-letter reasons {dict(collections.Counter(d['reason'].split(':')[0] for d in dead.values()))}"
        )

    assert set(answers) <= {(200, "delivered"), (202, "queued"), (200, "dead_lettered")}
    assert left_on_retry_queue == []
    for user in users:
        assert state[user] == "opted_in" or user in dead, f"{user} is neither applied nor parked: lost"
        if user in dead and user not in hung:
            assert state[user] is None, f"{user} is parked although Braze took its update"
        assert applied[user] <= 1 or user in hung, f"{user} was applied twice without a lost answer"
    assert all(d["reason"] and d["attempts"] and d["first_failure_at"] for d in dead.values())
    assert sum(injected.values()) > 0.2 * len(braze.track_requests())
