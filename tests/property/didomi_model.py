"""A model of Didomi for property tests: users whose consent changes through consent events, and the webhooks
Didomi sends for it (all six types), with the facts each webhook tells a receiver.

Didomi's own record of a user is the truth the connector must converge to: a confirmed GDPR consent event (or the
confirmation or edit of one) is applied to the user's record, whose `version` goes up and whose `updated_at` is the
time of the change. Times move forward one millisecond per change, so that every fact has its own position.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

MARKETING = "consents_purposes_marketing_enabled"
NEWSLETTER = "consents_purposes_newsletter_enabled"
SALES = "consents_purposes_offers_values_topics_sales_enabled"
INPUTS = (MARKETING, NEWSLETTER, SALES)
GROUP = "3f1c9a52-7d4e-4b8a-9c61-2e5f0a7b8d13"

CONNECTOR = {
    "type_id": "braze",
    "authentication": {"api_key": "local-braze-api-key", "server": "http://127.0.0.1:9"},
    "properties": {"regulations": ["gdpr"], "user_identifier": "external_id"},
    "mappings": [
        {"id": "OPTED_IN", "value": MARKETING},
        {"id": "UNSUBSCRIBED", "value": NEWSLETTER},
        {"id": GROUP, "value": SALES},
    ],
}

START = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)


def consents(values: dict[str, bool], noise: bool = False) -> dict:
    """Didomi's consents object for these input values (an absent input is absent). With `noise`, it also holds
    what no mapping reads and what a careless integration may put there: a malformed purpose, unknown fields."""
    purposes: list = [{"id": "analytics", "enabled": "yes", "values": "all"}, "not-a-purpose", {"enabled": True}] if noise else []
    for name, purpose in ((MARKETING, "marketing"), (NEWSLETTER, "newsletter")):
        if name in values:
            purposes.append({"id": purpose, "enabled": values[name]})
    if SALES in values:
        purposes.append({"id": "offers", "enabled": None, "values": {"topics": {"value": "sales" if values[SALES] else "news"}}})
    out = {"purposes": purposes, "vendors": {"enabled": [], "disabled": []}}
    if noise:
        out.update(channels="unexpected", tcfcs=42)
    return out


@dataclass
class Webhook:
    number: int
    user: str
    body: dict
    facts: dict[str, tuple[float, bool]]  # input -> (time, value) a receiver learns from it
    acked: bool = False
    deliveries: int = 0


@dataclass
class ConsentEvent:
    id: str
    created_at: datetime
    values: dict[str, bool]
    status: str
    regulation: str
    updated_at: datetime | None = None

    def entity(self, user: str, noise: bool = False) -> dict:
        out = {
            "id": self.id,
            "organization_id": "example-org",
            "created_at": _iso(self.created_at),
            "status": self.status,
            "regulation": self.regulation,
            "user": {"id": f"didomi-{user}", "organization_user_id": user},
            "consents": consents(self.values, noise),
        }
        if self.updated_at is not None:
            out["updated_at"] = _iso(self.updated_at)
        return out


@dataclass
class DidomiUser:
    name: str
    values: dict[str, bool] = field(default_factory=dict)  # the record's consents: the truth
    version: int = 0
    updated_at: datetime | None = None
    events: list[ConsentEvent] = field(default_factory=list)

    def record(self, noise: bool = False) -> dict:
        return {
            "id": f"didomi-{self.name}",
            "organization_id": "example-org",
            "organization_user_id": self.name,
            "version": self.version,
            "created_at": _iso(START),
            "updated_at": _iso(self.updated_at or START),
            "metadata": {},
            "consents": consents(self.values, noise),
        }


class Didomi:
    """`noisy`: entities carry parts no mapping reads, malformed (see `consents`), and some `user.updated` come
    without `old_entity`. Didomi's schema allows the latter; a receiver must shrug off the former."""

    def __init__(self, users: tuple[str, ...], noisy: bool = False):
        self.users = {name: DidomiUser(name) for name in users}
        self.noisy = noisy
        # Users whose changes reach the receiver only as user.* webhooks (an organisation subscribed to those
        # alone). Their records may be stamped out of order by Didomi's clocks: the version says which is newer,
        # and the facts they carry are ordered by version.
        self.user_webhooks_only: set[str] = set()
        self.skew = False
        self.outbox: list[Webhook] = []  # every webhook ever sent, acknowledged or not
        self._clock = START
        self._ids = itertools.count(1)

    def _tick(self) -> datetime:
        self._clock += timedelta(milliseconds=1)
        return self._clock

    def _send(self, user: str, body: dict, facts: dict[str, tuple[float, bool]]) -> None:
        if user in self.user_webhooks_only and not body["type"].startswith("user."):
            return
        self.outbox.append(Webhook(len(self.outbox), user, body, facts))

    def _apply(self, user: DidomiUser, values: dict[str, bool], at: datetime) -> None:
        old = user.record(self.noisy) if user.version else None
        changed = {k: v for k, v in values.items() if user.values.get(k) != v}
        user.values.update(values)
        user.version += 1
        by_version = user.name in self.user_webhooks_only
        user.updated_at = at - timedelta(milliseconds=3) if by_version and self.skew else at
        if by_version:
            at = datetime.fromtimestamp(user.version, tz=UTC)  # the facts' order: the version
        new = user.record(self.noisy)
        if old is None:
            self._send(user.name, {"type": "user.created", "parameters": {"entity": new}}, _facts(user.values, at))
        elif self.noisy and user.version % 2:  # no old_entity: the new state counts in full
            body = {"type": "user.updated", "parameters": {"new_entity": new}}
            self._send(user.name, body, _facts(user.values, at))
        else:
            body = {"type": "user.updated", "parameters": {"source": {}, "old_entity": old, "new_entity": new}}
            self._send(user.name, body, _facts(changed, at))

    # -- what users do ---------------------------------------------------------------------------------------------
    def consent(self, name: str, values: dict[str, bool], pending: bool, regulation: str) -> None:
        user, at = self.users[name], self._tick()
        event = ConsentEvent(
            f"ev-{next(self._ids)}", at, dict(values), "pending_approval" if pending else "confirmed", regulation
        )
        user.events.append(event)
        applies = not pending and regulation == "gdpr"
        body = {"type": "event.created", "parameters": {"entity": event.entity(name, self.noisy)}}
        self._send(name, body, _facts(values, at) if applies else {})
        if applies:
            self._apply(user, values, at)

    def confirm(self, name: str, index: int) -> bool:
        user = self.users[name]
        pending = [e for e in user.events if e.status == "pending_approval"]
        if not pending:
            return False
        event = pending[index % len(pending)]
        old = event.entity(name, self.noisy)
        event.status, event.updated_at = "confirmed", self._tick()
        applies = event.regulation == "gdpr"
        new = event.entity(name, self.noisy)
        body = {"type": "event.updated", "parameters": {"source": {}, "old_entity": old, "new_entity": new}}
        self._send(name, body, _facts(event.values, event.updated_at) if applies else {})
        if applies:
            self._apply(user, event.values, event.updated_at)
        return True

    def edit(self, name: str, index: int, values: dict[str, bool]) -> bool:
        user = self.users[name]
        confirmed = [e for e in user.events if e.status == "confirmed" and e.regulation == "gdpr"]
        if not confirmed:
            return False
        event = confirmed[index % len(confirmed)]
        old = event.entity(name, self.noisy)
        merged = {**event.values, **values}
        changed = {k: v for k, v in merged.items() if event.values.get(k) != v}
        event.values, event.updated_at = merged, self._tick()
        new = event.entity(name, self.noisy)
        body = {"type": "event.updated", "parameters": {"source": {}, "old_entity": old, "new_entity": new}}
        self._send(name, body, _facts(changed, event.updated_at))
        self._apply(user, changed, event.updated_at)
        return True

    def delete(self, name: str, of_user: bool) -> None:
        user = self.users[name]
        if of_user:
            self._send(name, {"type": "user.deleted", "parameters": {"entity": user.record()}}, {})
        elif user.events:
            self._send(name, {"type": "event.deleted", "parameters": {"entity": user.events[-1].entity(name)}}, {})


def _facts(values: dict[str, bool], at: datetime) -> dict[str, tuple[float, bool]]:
    return {name: (at.timestamp(), value) for name, value in values.items()}


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
