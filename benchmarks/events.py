"""Sample events for the benchmarks, from events/ (kept free of heavy imports: child processes load it)."""

import json
import uuid
from pathlib import Path

EVENT = json.loads((Path(__file__).resolve().parent.parent / "events" / "webhook-event-created.json").read_text())


def fresh_event() -> dict:
    """The sample consent event for a user seen for the first time (so nothing is skipped as a duplicate)."""
    body = json.loads(EVENT["body"])
    entity = body["parameters"]["entity"]
    entity["id"] = str(uuid.uuid4())
    entity["user"]["organization_user_id"] = f"bench-{uuid.uuid4().hex[:12]}"
    return {**EVENT, "body": json.dumps(body)}
