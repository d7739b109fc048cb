"""Braze's rate limit as backpressure: the container's reading of the workspace's window."""

from didomi_braze.domain.braze import DELIVERED, RATE_LIMITED, BrazeOutcome, RateWindow, classify_response
from didomi_braze.domain.ratelimit import RateGauge

NOW = 1_800_000_000.0


def _answer(remaining, reset=NOW + 2, limit=3000, kind=DELIVERED):
    return BrazeOutcome(kind, "x", window=RateWindow(limit, remaining, reset))


def test_braze_s_rate_limit_headers_are_read_on_every_answer_whatever_their_case():
    headers = {"x-ratelimit-limit": "3000", "X-RateLimit-Remaining": "2990", "X-RATELIMIT-RESET": str(NOW + 3)}
    outcome = classify_response(201, headers, b'{"message": "success"}', 1)
    assert outcome.window == RateWindow(3000, 2990, NOW + 3)
    assert classify_response(201, {"X-RateLimit-Limit": "n/a"}, b'{"message": "success"}', 1).window is None


def test_the_webhook_keeps_calling_braze_while_more_than_the_reserve_is_left():
    gauge = RateGauge(sync_reserve=0.5)
    assert gauge.hand_off_until(NOW) is None  # nothing known yet
    gauge.observe(_answer(remaining=1501), NOW)
    assert gauge.hand_off_until(NOW) is None


def test_the_webhook_hands_off_until_the_window_resets_once_the_reserve_is_reached():
    gauge = RateGauge(sync_reserve=0.5)
    gauge.observe(_answer(remaining=1500, reset=NOW + 2), NOW)
    assert gauge.hand_off_until(NOW) == NOW + 2
    assert gauge.spent_until(NOW) is None  # the worker may still use what is left
    assert gauge.hand_off_until(NOW + 2) is None  # a new window: the synchronous path resumes


def test_by_default_the_webhook_hands_off_once_a_quarter_of_the_window_is_spent():
    # The other integrations keep spending the window between two readings of it: the batched worker needs the
    # rest of the window to send its requests without meeting 429s.
    gauge = RateGauge()
    gauge.observe(_answer(remaining=2251), NOW)
    assert gauge.hand_off_until(NOW) is None
    gauge.observe(_answer(remaining=2250), NOW)
    assert gauge.hand_off_until(NOW) == NOW + 2


def test_a_429_spends_the_window_until_braze_s_reset():
    gauge = RateGauge()
    gauge.observe(_answer(remaining=10), NOW)
    gauge.observe(BrazeOutcome(RATE_LIMITED, "429", 429, retry_at=NOW + 30), NOW)
    assert gauge.spent_until(NOW + 1) == NOW + 30 and gauge.hand_off_until(NOW + 1) == NOW + 30
    assert gauge.spent_until(NOW + 30) is None


def test_a_429_without_a_reset_header_waits_for_the_last_known_reset():
    gauge = RateGauge()
    gauge.observe(_answer(remaining=10, reset=NOW + 2), NOW)
    gauge.observe(BrazeOutcome(RATE_LIMITED, "429", 429), NOW)
    assert gauge.spent_until(NOW) == NOW + 2
