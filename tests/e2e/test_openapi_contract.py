"""openapi.yaml describes the webhook as the code serves it: checked statically, then with schemathesis against
the webhook served over HTTP on 127.0.0.1 by the local stack (bounded in examples)."""

import re
from pathlib import Path

import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, settings
from openapi_spec_validator import validate

from didomi_braze.domain.didomi import EVENT_TYPES
from didomi_braze.domain.mapping import SKIP_REASONS
from sandbox.stack import LocalStack
from tests.samples import WEBHOOK_TOKEN

ROOT = Path(__file__).resolve().parents[2]
SPEC_PATH = ROOT / "openapi.yaml"
SPEC = yaml.safe_load(SPEC_PATH.read_text())
SCHEMA = schemathesis.openapi.from_path(SPEC_PATH)
SCHEMAS = SPEC["components"]["schemas"]


def test_the_document_is_valid_openapi():
    validate(SPEC)


def test_every_status_the_service_answers_is_documented():
    source = (ROOT / "functions" / "didomi_braze" / "service" / "webhook.py").read_text()
    answered = {m for m in re.findall(r"Answer\((\d{3})", source)}
    documented = set(SPEC["paths"]["/webhooks/didomi"]["post"]["responses"])
    assert answered and answered <= documented


def test_every_status_word_is_documented():
    source = (ROOT / "functions" / "didomi_braze" / "service" / "webhook.py").read_text()
    words = set(re.findall(r'"status": "([a-z_]+)"', source))
    documented = {
        w
        for name in ("Delivered", "Skipped", "DeadLettered", "Queued", "Refused")
        for w in SCHEMAS[name]["properties"]["status"]["enum"]
    }
    assert words and words <= documented


def test_skip_reasons_and_event_types_match_the_code():
    assert SCHEMAS["Skipped"]["properties"]["reason"]["enum"] == list(SKIP_REASONS)
    variants = ("EventCreatedOrDeleted", "UserCreatedOrDeleted", "EventUpdated", "UserUpdated")
    documented = [t for name in variants for t in SCHEMAS[name]["properties"]["type"]["enum"]]
    assert sorted(documented) == sorted(EVENT_TYPES)


@pytest.fixture(scope="module")
def local_webhook():
    with LocalStack(with_poller=False) as stack:
        yield stack.gateway.url.removesuffix("/webhooks/didomi")


@SCHEMA.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_served_webhook_conforms_to_its_openapi_document(case, local_webhook):
    # API Gateway HTTP APIs answer 404 (not 405) to a method no route declares, and so does the local gateway.
    # A body that breaks the schema only where nothing reads it is accepted on purpose (DESIGN §5: be liberal),
    # so schemathesis's negative-data check does not apply; every answer is still checked against the document.
    case.call_and_validate(
        base_url=local_webhook,
        headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}"},
        excluded_checks=[schemathesis.checks.unsupported_method, schemathesis.checks.negative_data_rejection],
    )
