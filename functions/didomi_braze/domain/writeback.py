"""The flow back, Braze → Didomi: the inverse of the connector document's mappings, and the consent event that
carries a Braze subscription change into Didomi (README "The flow back").

The inverse mapping, from the same connector document as the forward one:

| Braze change (Currents) | Didomi input (mapping value) |
| --- | --- |
| global state becomes `Unsubscribed` | the input behind `UNSUBSCRIBED` := false |
| global state becomes `Opted In` (only when opt-ins flow back) | the input behind `OPTED_IN` := true |
| global state becomes `Subscribed` | nothing: Braze's `Subscribed` means "neither opted in nor out" |
| a subscription group becomes `Unsubscribed` | the group's input := false |
| a subscription group becomes `Subscribed` (only when opt-ins flow back) | the group's input := true |

Opt-outs always flow; opt-ins only by the customer's choice. Then, in order, a change is not written when it is our
own echo (source `REST API` and equal to what the merged state says this connector gave Braze for that field),
when it is older than the newest Didomi value known for the input, or when Didomi already holds that value.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .connector import ConnectorConfig
from .consent import parse_consents
from .currents import GLOBAL_STATE_CHANGE, GROUP_STATE_CHANGE, CurrentsEvent
from .errors import InvalidWebhook
from .mapping import EMAIL_FIELD, OPTED_IN, SUBSCRIBED, UNSUBSCRIBED, BrazeIdentity, desired, group_field, values_of
from .ordering import Position, StoredInput
from .origin import FLOW_BACK_DELEGATE_ID, FLOW_BACK_DELEGATE_NAME

# Every reason a Currents event is handled without a Didomi write.
WRITE_BACK_SKIP_REASONS = (
    "duplicate",  # this Currents event id was handled before (Currents delivers at least once)
    "not_subscription",  # the file holds another Currents event type
    "no_user_id",  # no external_user_id (or email_address, with user_identifier email)
    "unknown_status",
    "echo",  # the connector's own update of Braze, reported back by Currents
    "neutral",  # global `Subscribed`: neither opted in nor out
    "not_mapped",  # no mapping reads this field
    "opt_in_disabled",  # an opt-in, while only opt-outs flow back
    "superseded",  # Didomi has a newer value for the input
    "no_change",  # the merged state (or Didomi itself) already holds this value
)

REST_API_SOURCE = "rest api"
_EVENT_ID_NAMESPACE = uuid.UUID("5b0e8a4e-3c2f-4d69-9a57-1f4c2b7d8e10")
_STATUS_VALUES = {"unsubscribed": UNSUBSCRIBED, "subscribed": SUBSCRIBED, "opted in": OPTED_IN}


@dataclass(frozen=True)
class SkipBack:
    """The Currents event is handled and deliberately not written to Didomi."""

    reason: str  # one of WRITE_BACK_SKIP_REASONS
    detail: str


@dataclass(frozen=True)
class WriteBack:
    """One Braze change to write to Didomi: the input it sets, at the Braze change's position."""

    event: CurrentsEvent
    identity: BrazeIdentity
    input: str  # the mapping value
    value: bool
    braze_field: str  # the Braze field it came from (mapping.EMAIL_FIELD or a group field)

    @property
    def position(self) -> Position:
        """Currents reports whole seconds and Didomi milliseconds: within the second, the order is unknown. An opt-out
        takes the second's last moment and an opt-in its first, so that a tie goes to the withdrawal."""
        at = self.event.at if self.value else self.event.at.replace(".000000Z", ".999999Z")
        return Position(at, None, f"braze:{self.event.id}")

    @property
    def stored(self) -> StoredInput:
        return StoredInput(self.value, self.position)


def identity_of(event: CurrentsEvent, config: ConnectorConfig) -> BrazeIdentity | None:
    """The Braze user as the connector identifies it, which is also the Didomi `organization_user_id`."""
    value = event.external_user_id if config.user_identifier == "external_id" else event.email_address
    return BrazeIdentity(config.user_identifier, value) if value and value.strip() else None


def decide(
    event: CurrentsEvent, config: ConnectorConfig, opt_ins: bool, merged: Mapping[str, StoredInput]
) -> WriteBack | SkipBack:
    """What one Braze change means for Didomi, judged against the user's merged state. Pure."""
    identity = identity_of(event, config)
    if identity is None:
        wanted = "external_user_id" if config.user_identifier == "external_id" else "email_address"
        return SkipBack("no_user_id", f"the Braze user has no {wanted} to identify them in Didomi")
    braze_value = _STATUS_VALUES.get(event.status)
    if braze_value is None or (event.event_type == GROUP_STATE_CHANGE and braze_value == OPTED_IN):
        return SkipBack("unknown_status", f"subscription_status {event.subscription_status[:40]!r} is not one Braze documents")

    field, input_name = _target(event, config)
    given = desired(values_of(merged), config)
    if event.source == REST_API_SOURCE and field is not None and given.get(field) == braze_value:
        return SkipBack("echo", f"Braze reports the {braze_value!r} this connector gave it (source REST API)")
    if event.event_type == GLOBAL_STATE_CHANGE and braze_value == SUBSCRIBED:
        return SkipBack("neutral", "Braze's global 'Subscribed' means neither opted in nor out: nothing to write")
    if input_name is None:
        what = "UNSUBSCRIBED" if braze_value == UNSUBSCRIBED else "OPTED_IN"
        where = f"subscription group {event.subscription_group_id!r}" if event.event_type == GROUP_STATE_CHANGE else what
        return SkipBack("not_mapped", f"no mapping reads {where}")
    value = braze_value != UNSUBSCRIBED
    if value and not opt_ins:
        return SkipBack("opt_in_disabled", "opt-ins flow back only when CURRENTS_OPT_INS is true")

    write = WriteBack(event, identity, input_name, value, field)
    stored = merged.get(input_name)
    if stored is not None and stored.position.key == write.position.key:
        return write  # merged before, by an invocation that may have died before Braze got it: again (idempotent)
    if stored is not None and stored.position.is_newer_than(write.position):
        return SkipBack("superseded", f"Didomi has a newer value for {input_name} ({stored.position.time})")
    if stored is not None and stored.value == value:
        return SkipBack("no_change", f"the merged state already has {input_name} = {str(value).lower()}")
    return write


def _target(event: CurrentsEvent, config: ConnectorConfig) -> tuple[str | None, str | None]:
    """The Braze field of the change, and the input behind it in this direction (None: not mapped)."""
    if event.event_type == GLOBAL_STATE_CHANGE:
        status = _STATUS_VALUES.get(event.status)
        name = config.email_opted_in if status == OPTED_IN else config.email_unsubscribed if status == UNSUBSCRIBED else None
        mapped = config.email_opted_in or config.email_unsubscribed
        return (EMAIL_FIELD if mapped else None), name
    wanted = (event.subscription_group_id or "").strip().lower()
    for group_id, value in config.subscription_groups:
        if group_id.strip().lower() == wanted:
            return group_field(group_id), value
    return None, None


# -- the Didomi consent event ------------------------------------------------------------------------------------
class UnwritableChange(Exception):
    """The change cannot be expressed as a Didomi consent event (an ambiguous mapping value, say): parked."""


def didomi_event_id(currents_id: str, regulation: str) -> str:
    """Deterministic, so that Didomi itself refuses a second write of the same Braze change."""
    return str(uuid.uuid5(_EVENT_ID_NAMESPACE, f"braze-currents:{currents_id}:{regulation}"))


def current_value(users: Sequence[dict], input_name: str) -> bool | None:
    """The input's value in the user's newest Didomi record (None: no choice, no user, or unreadable)."""
    user = newest_user(users)
    if user is None:
        return None
    try:
        return parse_consents(user.get("consents"), "user.consents").resolve(input_name)
    except InvalidWebhook:
        return None


def newest_user(users: Sequence[dict]) -> dict | None:
    """Several Didomi users may share an organization_user_id (before Didomi's one-to-one mode): the newest."""

    def order(user: dict) -> tuple[str, float]:
        version = user.get("version")
        updated = user.get("updated_at")
        return (updated if isinstance(updated, str) else "", float(version) if isinstance(version, int | float) else 0.0)

    return max(users, key=order, default=None)


def consent_event(write: WriteBack, users: Sequence[dict], regulation: str) -> dict:
    """The body of `POST /consents/events` for this change. Raises UnwritableChange."""
    consents = _consents(write.input, write.value, newest_user(users))
    # The inverse must read back as the forward mapping reads it: the event resolves the input to the value.
    if parse_consents(consents, "consents").resolve(write.input) is not write.value:
        raise UnwritableChange(f"{write.input} cannot be written back: the event built for it does not read back")
    event = write.event
    metadata = {
        "braze_event_id": event.id,
        "braze_event_type": event.event_type,
        "braze_subscription_status": event.subscription_status,
        "braze_state_change_source": event.state_change_source,
        "braze_subscription_group_id": event.subscription_group_id,
    }
    body = {
        "id": didomi_event_id(event.id, regulation),
        "created_at": datetime.fromtimestamp(event.time, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "user": {"organization_user_id": write.identity.value},
        "consents": consents,
        "delegate": {
            "id": FLOW_BACK_DELEGATE_ID,  # the tag the webhook skips (mapping.plan)
            "name": FLOW_BACK_DELEGATE_NAME,
            "metadata": {k: v for k, v in metadata.items() if v is not None},
        },
    }
    if regulation != "gdpr":  # Didomi stores an event without a regulation under GDPR
        body["regulation"] = regulation
    return body


_DEPTH = {"purpose": 0, "channel": 0, "preference": 1, "value": 1, "preference_channel": 2}  # keywords a form uses


@dataclass(frozen=True)
class _Target:
    form: str  # purpose, preference, preference_channel, value, channel
    purpose: str = ""
    preference: str = ""
    leaf: str = ""  # the channel id, or the preference value id


def _targets(name: str) -> list[_Target]:
    """Every place in a consent state this mapping value can name (ids may contain `_`: it can be several)."""
    if name.startswith("consents_channels_") and name.endswith("_enabled"):
        channel = name[len("consents_channels_") : -len("_enabled")]
        return [_Target("channel", leaf=channel)] if channel else []
    if not (name.startswith("consents_purposes_") and name.endswith("_enabled")):
        return []
    rest = name[len("consents_purposes_") : -len("_enabled")]
    out = [_Target("purpose", rest)] if rest else []
    for purpose, after in _splits(rest, "_preferences_"):
        out.append(_Target("preference", purpose, after))
        out.extend(_Target("preference_channel", purpose, pref, channel) for pref, channel in _splits(after, "_channel_"))
    for purpose, after in _splits(rest, "_values_"):
        out.extend(_Target("value", purpose, pref, value) for pref, value in _splits(after, "_"))
    return out


def _splits(text: str, separator: str) -> list[tuple[str, str]]:
    out, start = [], 0
    while (at := text.find(separator, start)) != -1:
        left, right = text[:at], text[at + len(separator) :]
        if left and right:
            out.append((left, right))
        start = at + 1
    return out


def _consents(name: str, value: bool, user: dict | None) -> dict:
    """The `consents` of the event: only the one place the mapping value names, at the new value."""
    current = user.get("consents") if isinstance(user, dict) else None
    target = _choose(name, _targets(name), current if isinstance(current, dict) else {})
    if target.form == "channel":
        return {"channels": [{"id": target.leaf, "enabled": value}]}
    if target.form == "purpose":
        return {"purposes": [{"id": target.purpose, "enabled": value}]}
    if target.form == "preference":
        return {"purposes": [{"id": target.purpose, "preferences": [{"id": target.preference, "enabled": value}]}]}
    if target.form == "preference_channel":
        channel = {"id": target.leaf, "enabled": value}
        return {"purposes": [{"id": target.purpose, "preferences": [{"id": target.preference, "channels": [channel]}]}]}
    # A v2 preference holds every selected value: keep the others, add or remove this one.
    selected = [v for v in _selected(current or {}, target) if v != target.leaf]
    if value:
        selected.append(target.leaf)
    return {"purposes": [{"id": target.purpose, "values": {target.preference: {"value": ",".join(selected)}}}]}


def _choose(name: str, targets: list[_Target], current: dict) -> _Target:
    """The place to write. The user's current Didomi state decides when several places could be meant; without
    it, the keywords a mapping value uses (_values_, _preferences_, _channel_) are taken at their word."""
    if not targets:
        raise UnwritableChange(f"{name} is not a mapping value this connector can write back")
    if len(targets) == 1:
        return targets[0]
    present = [t for t in targets if _present(t, current)]
    if len(present) == 1:
        return present[0]
    deepest = max(_DEPTH[t.form] for t in targets)
    structured = [t for t in targets if _DEPTH[t.form] == deepest]
    if not present and len(structured) == 1:
        return structured[0]
    raise UnwritableChange(
        f"{name} is ambiguous for writing back: it can name {len(present) or len(targets)} places in the consent "
        "state (ids containing _preferences_, _channel_, _values_ or _); rename the ids or drop the mapping"
    )


def _present(target: _Target, consents: dict) -> bool:
    purpose = _by_id(consents.get("purposes"), target.purpose)
    if target.form == "channel":
        return _by_id(consents.get("channels"), target.leaf) is not None
    if purpose is None:
        return False
    if target.form == "purpose":
        return True
    if target.form == "value":
        values = purpose.get("values")
        return isinstance(values, dict) and target.preference in values
    preference = _by_id(purpose.get("preferences"), target.preference)
    if target.form == "preference" or preference is None:
        return preference is not None
    return _by_id(preference.get("channels"), target.leaf) is not None


def _selected(consents: dict, target: _Target) -> list[str]:
    purpose = _by_id(consents.get("purposes"), target.purpose)
    values = purpose.get("values") if purpose else None
    selection = values.get(target.preference) if isinstance(values, dict) else None
    text = selection.get("value") if isinstance(selection, dict) else None
    return [v.strip() for v in text.split(",") if v.strip()] if isinstance(text, str) else []


def _by_id(entries: Any, wanted: str) -> dict | None:
    if not isinstance(entries, list):
        return None
    return next((e for e in entries if isinstance(e, dict) and e.get("id") == wanted), None)


def with_event(users: Sequence[dict], consents: dict, organization_user_id: str) -> list[dict]:
    """The user's records as Didomi holds them once the event is applied ("merged into the user consent status"),
    so that the next change of the same preference starts from the values this one left."""
    newest = newest_user(users)
    user = copy.deepcopy(newest) if newest is not None else {"organization_user_id": organization_user_id}
    current = user.get("consents") if isinstance(user.get("consents"), dict) else {}
    user["consents"] = current
    for purpose in consents.get("purposes", []):
        mine = _by_id(current.get("purposes"), purpose["id"])
        if mine is None:
            current["purposes"] = [*_entries(current.get("purposes")), {"id": purpose["id"]}]
            mine = current["purposes"][-1]
        if "enabled" in purpose:
            mine["enabled"] = purpose["enabled"]
        if "values" in purpose:
            mine["values"] = {**(mine.get("values") if isinstance(mine.get("values"), dict) else {}), **purpose["values"]}
        for preference in purpose.get("preferences", []):
            theirs = _by_id(mine.get("preferences"), preference["id"])
            if theirs is None:
                mine["preferences"] = [*_entries(mine.get("preferences")), {"id": preference["id"]}]
                theirs = mine["preferences"][-1]
            if "enabled" in preference:
                theirs["enabled"] = preference["enabled"]
            for channel in preference.get("channels", []):
                _set_channel(theirs, channel)
    for channel in consents.get("channels", []):
        _set_channel(current, channel)
    return [user if u is newest else u for u in users] if newest is not None else [user]


def _set_channel(holder: dict, channel: dict) -> None:
    mine = _by_id(holder.get("channels"), channel["id"])
    if mine is None:
        holder["channels"] = [*_entries(holder.get("channels")), dict(channel)]
    else:
        mine["enabled"] = channel["enabled"]


def _entries(value: Any) -> list:
    """A list as Didomi sends it; anything else (malformed) is replaced, as Didomi will replace it."""
    return value if isinstance(value, list) else []
