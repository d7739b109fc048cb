"""A Didomi consent state, flattened so that a mapping value resolves to true, false or null.

Mapping values name one place in the state (`consents_purposes_<purpose>_enabled`, ...). Ids may contain
underscores, so a value is never split: the state is flattened forward into the exact strings it can answer,
and a value is looked up as a whole.

Be liberal in what is accepted: a part of the state that no mapping reads may be malformed without rejecting
the event. A malformed part is remembered where it stands; only resolving a mapping value that lands on it
raises `InvalidWebhook` naming its path. Entries whose `id` is not a string cannot be named by any mapping
and are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidWebhook


@dataclass(frozen=True)
class _Invalid:
    """A malformed value at a place a mapping may read: an error when read, nothing otherwise."""

    path: str
    problem: str

    def raise_it(self):
        raise InvalidWebhook(f"{self.path} {self.problem}")


@dataclass(frozen=True)
class ConsentState:
    """What one Didomi entity says about consents: exact answers plus v2 preference-value selections."""

    # Exact mapping value -> enabled (true/false), or the problem found there. Null choices are absent.
    answers: dict[str, bool | _Invalid] = field(default_factory=dict)
    # v2 preference values: prefix `consents_purposes_<p>_values_<pref>_` -> ids of the selected values.
    # A prefix with `None` means the preference is present with no choice (`"value": null`).
    selections: dict[str, frozenset[str] | None | _Invalid] = field(default_factory=dict)
    # Prefixes under which the state could not be read at all (a list that is not a list, ...).
    unreadable: tuple[tuple[str, _Invalid], ...] = ()

    def resolve(self, value: str) -> bool | None:
        """The mapping value's answer: true, false, or None for "no choice / not present".

        Raises InvalidWebhook when the answer sits in a malformed part of the state."""
        if value in self.answers:
            answer = self.answers[value]
            return answer.raise_it() if isinstance(answer, _Invalid) else answer
        for prefix, problem in self.unreadable:
            if value.startswith(prefix):
                problem.raise_it()
        if not value.endswith("_enabled"):
            return None
        # The longest matching prefix wins, so that preference `topics_sales` beats `topics`.
        best: str | None = None
        for prefix in self.selections:
            if value.startswith(prefix) and len(value) > len(prefix) + len("_enabled"):
                if best is None or len(prefix) > len(best):
                    best = prefix
        if best is None:
            return None
        selected = self.selections[best]
        if isinstance(selected, _Invalid):
            return selected.raise_it()
        if selected is None:
            return None
        return value[len(best) : -len("_enabled")] in selected


def parse_consents(raw: Any, path: str) -> ConsentState:
    """Flatten a Didomi `consents` object. Absent parts mean "no choice"; malformed parts are kept as problems."""
    state = _Flattener()
    if raw is None:
        return ConsentState()
    if not isinstance(raw, dict):
        state.unreadable.append(("consents_", _Invalid(path, "must be an object")))
        return state.done()

    for i, purpose in state.entries(raw.get("purposes"), f"{path}.purposes", "consents_purposes_"):
        p_path = f"{path}.purposes[{i}]"
        base = f"consents_purposes_{purpose['id']}"
        state.answer(f"{base}_enabled", purpose.get("enabled"), f"{p_path}.enabled")

        for j, pref in state.entries(purpose.get("preferences"), f"{p_path}.preferences", f"{base}_preferences_"):
            pref_path = f"{p_path}.preferences[{j}]"
            pref_base = f"{base}_preferences_{pref['id']}"
            state.answer(f"{pref_base}_enabled", pref.get("enabled"), f"{pref_path}.enabled")
            for k, channel in state.entries(pref.get("channels"), f"{pref_path}.channels", f"{pref_base}_channel_"):
                key = f"{pref_base}_channel_{channel['id']}_enabled"
                state.answer(key, channel.get("enabled"), f"{pref_path}.channels[{k}].enabled")

        values = purpose.get("values")
        if values is not None and not isinstance(values, dict):
            state.unreadable.append((f"{base}_values_", _Invalid(f"{p_path}.values", "must be an object")))
        for pref_id, selection in (values or {}).items() if isinstance(values, dict) else ():
            prefix = f"{base}_values_{pref_id}_"
            v_path = f"{p_path}.values.{pref_id}"
            if not isinstance(selection, dict):
                state.selections[prefix] = _Invalid(v_path, 'must be an object like {"value": "a,b"}')
                continue
            selected = selection.get("value")
            if selected is not None and not isinstance(selected, str):
                state.selections[prefix] = _Invalid(f"{v_path}.value", "must be a string")
                continue
            state.selections[prefix] = (
                None if selected is None else frozenset(v.strip() for v in selected.split(",") if v.strip())
            )

    for i, channel in state.entries(raw.get("channels"), f"{path}.channels", "consents_channels_"):
        state.answer(f"consents_channels_{channel['id']}_enabled", channel.get("enabled"), f"{path}.channels[{i}].enabled")
    return state.done()


class _Flattener:
    def __init__(self) -> None:
        self.answers: dict[str, bool | _Invalid] = {}
        self.selections: dict[str, frozenset[str] | None | _Invalid] = {}
        self.unreadable: list[tuple[str, _Invalid]] = []

    def entries(self, raw: Any, path: str, prefix: str):
        """(index, entry) for each object with a string id; a value that is not a list makes `prefix` unreadable."""
        if raw is None:
            return
        if not isinstance(raw, list):
            self.unreadable.append((prefix, _Invalid(path, "must be a list")))
            return
        for i, item in enumerate(raw):
            if isinstance(item, dict) and isinstance(item.get("id"), str):
                yield i, item

    def answer(self, key: str, enabled: Any, path: str) -> None:
        if key in self.answers:  # the first entry with an id is the one a mapping reads
            return
        if enabled is None:
            return
        self.answers[key] = enabled if isinstance(enabled, bool) else _Invalid(path, "must be true, false or null")

    def done(self) -> ConsentState:
        return ConsentState(self.answers, self.selections, tuple(self.unreadable))
