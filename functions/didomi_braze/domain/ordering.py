"""Never let an older consent state overwrite a newer one: the per-field ordering rule.

Every Didomi event has a *position*: its ordering key (a user's `updated_at` then `version`, a consent event's
`created_at`; all UTC, so a stream mixing both kinds sorts by the time of the change) followed by its event id,
which breaks ties deterministically and makes the same event delivered twice compare equal.

The state table remembers, per Braze user and per Braze field (`email_subscribe`, each subscription group), the
position of the value Braze was last given. An update may only set a field whose stored position is older than
its own. Fields are judged one by one because Didomi events are partial: a newer event about the newsletter
does not make an older, still undelivered, change of a subscription group obsolete.
"""

from __future__ import annotations

from dataclasses import dataclass

from .mapping import BrazeUpdate

EMAIL_FIELD = "email_subscribe"
GROUP_PREFIX = "group:"

DUPLICATE = "duplicate"
SUPERSEDED = "superseded"


def position(order_key: str, event_id: str) -> str:
    return f"{order_key}#{event_id}"


def fields_of(update: BrazeUpdate) -> dict[str, str]:
    """The update as one value per Braze field name."""
    out = {GROUP_PREFIX + gid: state for gid, state in update.subscription_groups.items()}
    if update.email_subscribe is not None:
        out[EMAIL_FIELD] = update.email_subscribe
    return out


def update_from_fields(values: dict[str, str]) -> BrazeUpdate:
    return BrazeUpdate(
        email_subscribe=values.get(EMAIL_FIELD),
        subscription_groups={f[len(GROUP_PREFIX) :]: v for f, v in values.items() if f.startswith(GROUP_PREFIX)},
    )


@dataclass(frozen=True)
class Verdict:
    """What may be sent, and why the rest may not."""

    send: BrazeUpdate
    positions: dict[str, str]  # field -> position of the value being sent
    skip_reason: str | None  # duplicate | superseded, when nothing may be sent
    dropped: tuple[str, ...] = ()  # fields withheld because Braze already has a newer value

    @property
    def is_skip(self) -> bool:
        return self.skip_reason is not None


def judge(update: BrazeUpdate, field_positions: dict[str, str], stored: dict[str, str], retry: bool) -> Verdict:
    """Keep each field whose position is newer than the stored one.

    On the webhook path (`retry=False`) an equal position means Braze already has this very event: a duplicate.
    On a retry an equal position is the event's own earlier attempt, possibly never applied, so it is sent again.
    """
    values = fields_of(update)
    keep: dict[str, str] = {}
    duplicate = False
    for name, value in values.items():
        mine, theirs = field_positions[name], stored.get(name)
        if theirs is None or mine > theirs or (retry and mine == theirs):
            keep[name] = value
        elif mine == theirs:
            duplicate = True
    dropped = tuple(sorted(set(values) - set(keep)))
    if keep:
        return Verdict(update_from_fields(keep), {n: field_positions[n] for n in keep}, None, dropped)
    return Verdict(BrazeUpdate(), {}, DUPLICATE if duplicate else SUPERSEDED, dropped)
