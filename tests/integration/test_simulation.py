"""The burst simulation (`make simulate`), scaled down fifty times: 20,000 webhooks in 200 s for 8,000 users, five
times what Braze's rate limit allows with half of it spent by other integrations, through the real services."""

import json
from datetime import UTC, datetime, timedelta

import pytest

from benchmarks.simulation.report import markdown, write_section
from benchmarks.simulation.scenario import START, Scenario, Simulation, simulate
from didomi_braze.domain.didomi import parse_webhook
from didomi_braze.domain.mapping import Change, plan


@pytest.fixture(scope="module")
def figures():
    return simulate(Scenario(seed=1).scaled(50))


def test_a_burst_over_braze_s_rate_limit_loses_nothing_and_parks_nothing_for_rate_limiting(figures):
    assert figures.applied == figures.scenario.events
    assert figures.lost == 0 and figures.unfinished == 0
    assert set(figures.dead_lettered) <= {"retries_exhausted"}
    assert figures.webhook_crashes == 0 and figures.worker_crashes == 0


def test_at_most_one_braze_request_in_a_hundred_is_answered_429(figures):
    assert figures.answered_429 <= figures.braze_requests * 0.01, figures.braze_by_status
    # batched: far fewer requests than events
    assert figures.braze_requests < figures.scenario.events / 4


def test_everything_is_applied_within_a_minute_of_the_last_webhook(figures):
    assert figures.all_applied_after is not None and figures.all_applied_after <= 60


def test_every_user_ends_with_the_braze_state_the_newest_didomi_state_calls_for(figures):
    assert figures.wrong_states == 0, figures.wrong_examples


def test_the_report_replaces_its_own_section_and_leaves_the_rest(figures, tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\ncold start …\n")
    write_section(results, markdown(figures))
    write_section(results, markdown(figures))
    text = results.read_text()
    assert text.startswith("# Benchmark results\n\ncold start …\n")
    assert text.count("<!-- simulation -->") == 1 and text.count("## Simulation") == 1
    assert text.rstrip().endswith("<!-- /simulation -->")


def test_each_simulated_webhook_is_didomi_s_event_created_for_its_change():
    simulation = Simulation(Scenario(seed=1).scaled(50))
    for event in (0, 1, 999, 1_000, 12_345, simulation.scenario.events - 1):
        body = json.loads(simulation.body(event))
        entity = body["parameters"]["entity"]
        user = f"user-{simulation.user_of[event]}"
        created = datetime.fromtimestamp(START, tz=UTC) + timedelta(milliseconds=event)
        assert body["type"] == "event.created" and entity["id"] == f"ev-{event}"
        assert entity["created_at"] == created.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        assert entity["user"] == {"id": f"didomi-{user}", "organization_user_id": user}
        change = plan(parse_webhook(body), simulation.config)
        assert isinstance(change, Change) and change.identity.value == user
        assert {name: stored.value for name, stored in change.inputs.items()} == simulation.values(event)
