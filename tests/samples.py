"""Sample payloads from events/, the same files `sam local invoke -e` and the local stack take."""

import json
from pathlib import Path

EVENTS = Path(__file__).resolve().parent.parent / "events"
WEBHOOK_TOKEN = "local-webhook-token"  # the token the sample events carry
BRAZE_API_KEY = "local-braze-api-key"  # the key in events/connector.json


def http_event(name: str) -> dict:
    """An HTTP API payload 2.0 event from events/, as API Gateway would deliver it."""
    return json.loads((EVENTS / f"webhook-{name}.json").read_text())


def didomi_body(name: str) -> dict:
    """The Didomi webhook body inside a sample event."""
    return json.loads(http_event(name)["body"])


def connector_document(server: str | None = None, **overrides) -> dict:
    doc = json.loads((EVENTS / "connector.json").read_text())
    if server is not None:
        doc["authentication"]["server"] = server
    doc.update(overrides)
    return doc


def currents_records(event_type: str) -> list[dict]:
    """Sample Currents records of one event type, with the fields Braze's event glossary documents."""
    return json.loads((EVENTS / "currents-records.json").read_text())[event_type]


def ingest_batch_event() -> dict:
    """An SQS event of the ingest queue carrying S3's notification of one Currents file."""
    return json.loads((EVENTS / "ingest-batch.json").read_text())
