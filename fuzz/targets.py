"""The fuzz target: the webhook body and the connector document through parsing, planning, merging into a user's
state and Braze payload building. Refusals are the domain's own errors; any other exception is a finding.

Kept free of atheris so that the test suite can run it over the seed corpus."""

from __future__ import annotations

import json
from pathlib import Path

from didomi_braze.domain.braze import attributes_object, classify_response
from didomi_braze.domain.connector import parse_connector_document
from didomi_braze.domain.didomi import parse_webhook
from didomi_braze.domain.errors import ConfigurationError, InvalidWebhook
from didomi_braze.domain.mapping import Change, desired, plan, values_of
from didomi_braze.domain.ordering import merge

EVENTS = Path(__file__).resolve().parent.parent / "events"
CONFIG = parse_connector_document((EVENTS / "connector.json").read_text())
WEBHOOK, CONNECTOR, BRAZE_ANSWER = 0, 1, 2


def one_input(data: bytes) -> None:
    if not data:
        return
    kind, payload = data[0] % 3, data[1:]
    if kind == CONNECTOR:
        try:
            parse_connector_document(payload.decode("utf-8", errors="replace"), allow_loopback=True)
        except ConfigurationError:
            pass
        return
    if kind == BRAZE_ANSWER:
        outcome = classify_response(200 + payload[0] % 400 if payload else 201, {"x-ratelimit-reset": "1"}, payload[1:], 3)
        assert outcome.kind in ("delivered", "retryable", "rate_limited", "permanent")
        return
    try:
        body = json.loads(payload)
    except (ValueError, RecursionError):
        return  # the service answers 400 before parsing
    try:
        decision = plan(parse_webhook(body), CONFIG)
    except InvalidWebhook:
        return
    if isinstance(decision, Change):
        merged = merge({}, decision.inputs)
        assert merged.state == decision.inputs and not merged.older  # a first change is taken whole
        assert merge(merged.state, decision.inputs).seen == set(decision.inputs)  # the same change again is seen
        attributes_object(decision.identity, desired(values_of(merged.state), CONFIG), CONFIG.upsert_mode)


def seed_corpus() -> list[bytes]:
    """Every sample from events/: webhook bodies, the connector document, and Braze answers."""
    seeds = []
    for path in sorted(EVENTS.glob("webhook-*.json")):
        body = json.loads(path.read_text()).get("body") or ""
        seeds.append(bytes([WEBHOOK]) + body.encode())
    seeds.append(bytes([CONNECTOR]) + (EVENTS / "connector.json").read_bytes())
    seeds.append(bytes([BRAZE_ANSWER, 1]) + b'{"message": "success", "errors": [{"index": 1, "type": "bad"}]}')
    return seeds
