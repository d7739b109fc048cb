"""Hostile and careless senders, generated: arbitrary bytes, JSON, headers, and Didomi-shaped bodies with wrong
types. The webhook never raises, never answers 5xx for bad input, and never calls Braze or touches the queues
for a request it refuses."""

import base64
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from moto.core import DEFAULT_ACCOUNT_ID
from moto.sqs.models import sqs_backends

from tests.integration.conftest import REGION, call_webhook
from tests.samples import WEBHOOK_TOKEN, didomi_body, http_event

REFUSED = {400, 401, 403, 413}
FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
SAMPLES = ["user-created", "user-updated", "event-created", "event-updated", "event-updated-confirmed", "user-deleted"]


def _event(body: str | None, headers: dict, is_base64: bool = False) -> dict:
    event = http_event("event-created")
    event.update(body=body, headers=headers, isBase64Encoded=is_base64)
    return event


def _auth() -> dict:
    return {"authorization": f"Bearer {WEBHOOK_TOKEN}", "content-type": "application/json"}


def _state(aws, braze) -> tuple:
    """Braze requests, and every message on both queues, delayed and in flight included.

    Counted in moto's backend: its `ApproximateNumberOf…` attributes are each taken at their own instant, so a
    message an earlier, accepted example queued for a few seconds (a busy user) that becomes visible between two of
    them is counted twice or not at all."""
    backend = sqs_backends[DEFAULT_ACCOUNT_ID][REGION]
    queues = [backend.queues[url.rsplit("/", 1)[-1]] for url in (aws.retry_queue, aws.dead_letter_queue)]
    return len(braze.requests), [len(queue._messages) for queue in queues]


def _assert_refusal_changed_nothing(aws, braze, before: tuple, status: int) -> None:
    # Compared with the state before this example's request: earlier examples, accepted, may have queued events.
    assert status < 500, status
    if status in REFUSED:
        assert _state(aws, braze) == before


@FUZZ
@given(body=st.binary(max_size=2000), is_base64=st.booleans())
def test_arbitrary_bytes(aws, braze, body, is_base64):
    text = base64.b64encode(body).decode() if is_base64 else body.decode("utf-8", errors="surrogateescape")
    before = _state(aws, braze)
    status, answer = call_webhook(_event(text, _auth(), is_base64))
    _assert_refusal_changed_nothing(aws, braze, before, status)
    assert status in REFUSED and "status" in answer


@FUZZ
@given(value=json_values)
def test_arbitrary_json(aws, braze, value):
    before = _state(aws, braze)
    status, _ = call_webhook(_event(json.dumps(value), _auth()))
    _assert_refusal_changed_nothing(aws, braze, before, status)


@FUZZ
@given(headers=st.dictionaries(st.text(max_size=30), st.text(max_size=80), max_size=6), body=st.sampled_from(SAMPLES))
def test_arbitrary_headers_without_the_token_are_refused(aws, braze, headers, body):
    headers = {k: v for k, v in headers.items() if WEBHOOK_TOKEN not in v}
    before = _state(aws, braze)
    status, _ = call_webhook(_event(json.dumps(didomi_body(body)), headers))
    assert status == 401
    _assert_refusal_changed_nothing(aws, braze, before, status)


def _paths(value, prefix=()):
    """Every path to a value inside a JSON document."""
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _paths(child, (*prefix, index))


def _replace(document, path, new):
    if not path:
        return new
    target = document
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = new
    return document


@st.composite
def mutated_didomi_bodies(draw):
    """A sample Didomi body with 1 to 3 places replaced by a value of any JSON type."""
    body = didomi_body(draw(st.sampled_from(SAMPLES)))
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_paths(body))
        body = _replace(body, draw(st.sampled_from(paths)), draw(json_values))
    return body


@FUZZ
@given(body=mutated_didomi_bodies())
def test_didomi_shaped_bodies_with_wrong_types(aws, braze, body):
    before = _state(aws, braze)
    status, answer = call_webhook(_event(json.dumps(body), _auth()))
    _assert_refusal_changed_nothing(aws, braze, before, status)
    assert status in REFUSED | {200, 202}, answer
