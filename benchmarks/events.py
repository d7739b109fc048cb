"""Sample events for the benchmarks, from events/ (kept free of heavy imports: child processes load it)."""

import json
import uuid
from pathlib import Path

EVENT = json.loads((Path(__file__).resolve().parent.parent / "events" / "webhook-event-created.json").read_text())


def retry_message(user: str) -> str:
    """A retry-queue message body: the sample event's newsletter opt-in for this user, owed to Braze."""
    from didomi_braze.domain.mapping import BrazeIdentity, Change
    from didomi_braze.domain.ordering import Position, StoredInput
    from didomi_braze.domain.retry import PendingChange

    position = Position("2026-05-04T12:00:00.000000Z", None, f"e-{user}")
    change = Change(
        BrazeIdentity("external_id", user),
        {"consents_purposes_newsletter_enabled": StoredInput(True, position)},
        f"event.created:e-{user}",
        "event.created",
    )
    return PendingChange(change, ("email_subscribe",), "benchmark", "2026-05-04T12:00:01.000000Z", failures=1).to_json()


def fresh_event() -> dict:
    """The sample consent event for a user seen for the first time (so nothing is skipped as a duplicate)."""
    body = json.loads(EVENT["body"])
    entity = body["parameters"]["entity"]
    entity["id"] = str(uuid.uuid4())
    entity["user"]["organization_user_id"] = f"bench-{uuid.uuid4().hex[:12]}"
    return {**EVENT, "body": json.dumps(body)}
