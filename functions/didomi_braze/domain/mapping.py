"""From Didomi consent to Braze fields (README: "Mappings").

Two steps, both pure:

- `plan`: what one webhook carries. The inputs (mapping values) it sets to true or false, at its position. For
  `user.updated` and for `event.updated` between two confirmed states, an input equal in `old_entity` and
  `new_entity` is not a change of this event and is not carried.
- `desired`: what Braze should hold, evaluated on a user's *merged* inputs (ordering.py), never on one event alone:
  Didomi consent events are partial.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType

from .connector import ConnectorConfig
from .didomi import DidomiWebhook, Entity
from .errors import InvalidWebhook
from .ordering import Position, StoredInput
from .origin import written_by_flow_back

OPTED_IN = "opted_in"
SUBSCRIBED = "subscribed"
UNSUBSCRIBED = "unsubscribed"

EMAIL_FIELD = "email_subscribe"
GROUP_PREFIX = "group:"


def group_field(group_id: str) -> str:
    return GROUP_PREFIX + group_id


def field_inputs(config: ConnectorConfig) -> Mapping[str, tuple[str, ...]]:
    """Each Braze field the configuration drives, and the inputs it is evaluated from."""
    return MappingProxyType(_field_inputs(config))


@lru_cache(maxsize=8)  # asked several times per event, for the one configuration a container holds
def _field_inputs(config: ConnectorConfig) -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    email = tuple(v for v in (config.email_opted_in, config.email_unsubscribed) if v)
    if email:
        out[EMAIL_FIELD] = email
    for group_id, value in config.subscription_groups:
        out[group_field(group_id)] = (value,)
    return out


def fields_reading(inputs: Iterable[str], config: ConnectorConfig) -> set[str]:
    """The Braze fields whose value depends on any of these inputs."""
    wanted = set(inputs)
    return {f for f, reads in field_inputs(config).items() if wanted.intersection(reads)}


def desired(values: Mapping[str, bool], config: ConnectorConfig) -> dict[str, str]:
    """Every non-null Braze field for these input values (absent inputs are null).

    The email truth table, first matching row wins, with o and u the inputs behind OPTED_IN and UNSUBSCRIBED:
    u false -> unsubscribed; o true -> opted_in; o false or u true -> subscribed; otherwise not sent.
    A subscription group is subscribed / unsubscribed for true / false, not sent for null.
    """
    o = values.get(config.email_opted_in) if config.email_opted_in else None
    u = values.get(config.email_unsubscribed) if config.email_unsubscribed else None
    out: dict[str, str] = {}
    if u is False:
        out[EMAIL_FIELD] = UNSUBSCRIBED
    elif o is True:
        out[EMAIL_FIELD] = OPTED_IN
    elif o is False or u is True:
        out[EMAIL_FIELD] = SUBSCRIBED
    for group_id, value in config.subscription_groups:
        enabled = values.get(value)
        if enabled is not None:
            out[group_field(group_id)] = SUBSCRIBED if enabled else UNSUBSCRIBED
    return out


def values_of(state: Mapping[str, StoredInput]) -> dict[str, bool]:
    return {name: stored.value for name, stored in state.items()}


@dataclass(frozen=True, slots=True)
class BrazeIdentity:
    """Who the update is for in Braze: `external_id` or `email`, and its value."""

    kind: str
    value: str

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.value}"

    @property
    def state_key(self) -> str:
        """The state table's key: a hash, so the table holds no user id in clear."""
        return hashlib.sha256(self.key.encode()).hexdigest()


# Every reason an event is acknowledged without a Braze call: the first six are decided from the event alone,
# the last two once it meets the user's merged state. `from_braze`: the flow back wrote it (README "The flow back").
SKIP_REASONS = ("deleted", "from_braze", "pending", "regulation_not_configured", "no_user_id", "no_change", "superseded")


@dataclass(frozen=True)
class Skip:
    """The event is acknowledged and deliberately not sent to Braze."""

    reason: str  # one of SKIP_REASONS
    detail: str


@dataclass(frozen=True, slots=True)
class Change:
    """What one Didomi event (or one user of a backfill) carries for one Braze user."""

    identity: BrazeIdentity
    inputs: dict[str, StoredInput]  # the inputs it sets, each at the change's position
    event_id: str
    event_type: str

    @property
    def position(self) -> Position:
        return next(iter(self.inputs.values())).position


def plan(webhook: DidomiWebhook, config: ConnectorConfig) -> Skip | Change:
    """Decide what one webhook carries. Pure: the same event and config always give the same plan.

    Raises InvalidWebhook when a part the mappings or the ordering read is malformed or missing."""
    entity = webhook.entity
    if webhook.is_deleted:
        return Skip("deleted", f"{webhook.type} is acknowledged; Braze profiles are not deleted by this connector")
    if written_by_flow_back(webhook.cause):
        return Skip("from_braze", "the consent event was written by this connector from a Braze change: Braze has it")
    if not entity.is_confirmed:
        return Skip("pending", f"the consent event's status is {entity.status[:40]!r}; Didomi applies only confirmed events")
    if webhook.regulation not in config.regulations:
        return Skip(
            "regulation_not_configured",
            f"regulation {webhook.regulation[:32]!r} is not in properties.regulations ({', '.join(sorted(config.regulations))})",
        )
    if entity.organization_user_id is None:
        return Skip("no_user_id", "the event has no organization_user_id to identify the Braze user")

    carried = carried_inputs(entity, webhook.old_entity, config)
    if not carried:
        return Skip("no_change", "the event sets none of the consents the mappings read")
    position = entity.position()  # only an event that changes something needs (and must have) a position
    return Change(
        identity=BrazeIdentity(config.user_identifier, entity.organization_user_id),
        inputs={name: StoredInput(value, position) for name, value in carried.items()},
        event_id=webhook.event_id,
        event_type=webhook.type,
    )


def carried_inputs(entity: Entity, old: Entity | None, config: ConnectorConfig) -> dict[str, bool]:
    """The mapped inputs this entity sets to true or false, and that are a change of this event."""
    out: dict[str, bool] = {}
    compare = old is not None and old.is_confirmed  # a pending event that becomes confirmed carries everything
    for name in config.inputs:
        value = entity.consents.resolve(name)
        if value is None:
            continue
        if compare and _resolve_leniently(old, name) == value:
            continue
        out[name] = value
    return out


def _resolve_leniently(entity: Entity, name: str) -> bool | None:
    """The old state only decides what is unchanged: an unreadable old value counts as a change."""
    try:
        return entity.consents.resolve(name)
    except InvalidWebhook:
        return None
