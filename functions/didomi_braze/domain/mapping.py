"""From a Didomi event to the Braze update it calls for (README: "Mappings")."""

from __future__ import annotations

from dataclasses import dataclass, field

from .connector import ConnectorConfig
from .consent import ConsentState
from .didomi import CONFIRMED, PENDING, DidomiWebhook

OPTED_IN = "opted_in"
SUBSCRIBED = "subscribed"
UNSUBSCRIBED = "unsubscribed"


@dataclass(frozen=True)
class BrazeUpdate:
    """The Braze fields one consent state sets. `None` / absent means "leave Braze as it is"."""

    email_subscribe: str | None = None
    subscription_groups: dict[str, str] = field(default_factory=dict)  # group id -> subscribed | unsubscribed

    def is_empty(self) -> bool:
        return self.email_subscribe is None and not self.subscription_groups

    def changes_since(self, old: BrazeUpdate) -> BrazeUpdate:
        """Only the fields whose value differs from `old` (a field that became null sends nothing)."""
        return BrazeUpdate(
            email_subscribe=self.email_subscribe if self.email_subscribe != old.email_subscribe else None,
            subscription_groups={
                gid: state for gid, state in self.subscription_groups.items() if old.subscription_groups.get(gid) != state
            },
        )

    def overlaid_by(self, newer: BrazeUpdate) -> BrazeUpdate:
        """This update with every field that `newer` sets replaced by the newer value."""
        return BrazeUpdate(
            email_subscribe=newer.email_subscribe if newer.email_subscribe is not None else self.email_subscribe,
            subscription_groups={**self.subscription_groups, **newer.subscription_groups},
        )

    def to_dict(self) -> dict:
        out: dict = {}
        if self.email_subscribe is not None:
            out["email_subscribe"] = self.email_subscribe
        if self.subscription_groups:
            out["subscription_groups"] = dict(sorted(self.subscription_groups.items()))
        return out

    @classmethod
    def from_dict(cls, raw: dict) -> BrazeUpdate:
        return cls(raw.get("email_subscribe"), dict(raw.get("subscription_groups") or {}))


def update_for(state: ConsentState, config: ConnectorConfig) -> BrazeUpdate:
    """Every non-null Braze field this consent state calls for."""
    o = state.resolve(config.email_opted_in) if config.email_opted_in else None
    u = state.resolve(config.email_unsubscribed) if config.email_unsubscribed else None
    if u is False:
        email = UNSUBSCRIBED
    elif o is True:
        email = OPTED_IN
    elif o is False or u is True:
        email = SUBSCRIBED
    else:
        email = None
    groups = {}
    for group_id, value in config.subscription_groups:
        enabled = state.resolve(value)
        if enabled is not None:
            groups[group_id] = SUBSCRIBED if enabled else UNSUBSCRIBED
    return BrazeUpdate(email, groups)


@dataclass(frozen=True)
class BrazeIdentity:
    """Who the update is for in Braze: `external_id` or `email`, and its value."""

    kind: str
    value: str

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.value}"


# Every reason an event is acknowledged without a Braze call (the last two come from the ordering guard).
SKIP_REASONS = ("deleted", "pending", "regulation_not_configured", "no_user_id", "no_change", "duplicate", "superseded")


@dataclass(frozen=True)
class Skip:
    """The event is acknowledged and deliberately not sent to Braze."""

    reason: str  # one of SKIP_REASONS
    detail: str


@dataclass(frozen=True)
class Push:
    """The event calls for this Braze update."""

    identity: BrazeIdentity
    update: BrazeUpdate
    order_key: str
    event_id: str


def plan(webhook: DidomiWebhook, config: ConnectorConfig) -> Skip | Push:
    """Decide what one webhook means for Braze. Pure: the same event and config always give the same plan."""
    entity = webhook.entity
    if webhook.is_deleted:
        return Skip("deleted", f"{webhook.type} is acknowledged; Braze profiles are not deleted by this connector")
    if entity.status == PENDING:
        return Skip("pending", "the consent event is pending approval; Didomi applies it only once approved")
    if webhook.regulation not in config.regulations:
        return Skip(
            "regulation_not_configured",
            f"regulation {webhook.regulation[:32]!r} is not in properties.regulations ({', '.join(sorted(config.regulations))})",
        )
    if entity.organization_user_id is None:
        return Skip("no_user_id", "the event has no organization_user_id to identify the Braze user")

    update = update_for(entity.consents, config)
    old = webhook.old_entity
    if old is not None and old.status == CONFIRMED:
        # user.updated, and event.updated between two confirmed states: send only what changed.
        # An event.updated that confirms a pending event sends every field, like a created event.
        update = update.changes_since(update_for(old.consents, config))
    if update.is_empty():
        return Skip("no_change", "the mapped consents do not change anything in Braze")
    identity = BrazeIdentity(config.user_identifier, entity.organization_user_id)
    return Push(identity, update, entity.order_key, webhook.event_id)
