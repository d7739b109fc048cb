"""A Didomi consent state, flattened so that a mapping value resolves to true, false or null.

Mapping values name one place in the state (`consents_purposes_<purpose>_enabled`, ...). Ids may contain
underscores, so a value is never split: the state is flattened forward into the exact strings it can answer,
and a value is looked up as a whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidWebhook


@dataclass(frozen=True)
class ConsentState:
    """What one Didomi entity says about consents: exact answers plus v2 preference-value selections."""

    # Exact mapping value -> enabled (true/false). Null choices are simply absent.
    answers: dict[str, bool] = field(default_factory=dict)
    # v2 preference values: prefix `consents_purposes_<p>_values_<pref>_` -> ids of the selected values.
    # A prefix with `None` means the preference is present with no choice (`"value": null`).
    selections: dict[str, frozenset[str] | None] = field(default_factory=dict)

    def resolve(self, value: str) -> bool | None:
        """The mapping value's answer: true, false, or None for "no choice / not present"."""
        if value in self.answers:
            return self.answers[value]
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
        if selected is None:
            return None
        return value[len(best) : -len("_enabled")] in selected


def parse_consents(raw: Any, path: str) -> ConsentState:
    """Validate a Didomi `consents` object and flatten it. Absent parts mean "no choice"."""
    if raw is None:
        return ConsentState()
    _require(isinstance(raw, dict), path, "must be an object")
    answers: dict[str, bool] = {}
    selections: dict[str, frozenset[str] | None] = {}

    for i, purpose in enumerate(_list(raw.get("purposes"), f"{path}.purposes")):
        p_path = f"{path}.purposes[{i}]"
        pid = _id(purpose, p_path)
        base = f"consents_purposes_{pid}"
        _answer(answers, f"{base}_enabled", purpose.get("enabled"), f"{p_path}.enabled")

        for j, pref in enumerate(_list(purpose.get("preferences"), f"{p_path}.preferences")):
            pref_path = f"{p_path}.preferences[{j}]"
            pref_base = f"{base}_preferences_{_id(pref, pref_path)}"
            _answer(answers, f"{pref_base}_enabled", pref.get("enabled"), f"{pref_path}.enabled")
            for k, channel in enumerate(_list(pref.get("channels"), f"{pref_path}.channels")):
                ch_path = f"{pref_path}.channels[{k}]"
                key = f"{pref_base}_channel_{_id(channel, ch_path)}_enabled"
                _answer(answers, key, channel.get("enabled"), f"{ch_path}.enabled")

        values = purpose.get("values")
        if values is not None:
            _require(isinstance(values, dict), f"{p_path}.values", "must be an object")
            for pref_id, selection in values.items():
                v_path = f"{p_path}.values.{pref_id}"
                _require(isinstance(selection, dict), v_path, 'must be an object like {"value": "a,b"}')
                selected = selection.get("value")
                _require(selected is None or isinstance(selected, str), f"{v_path}.value", "must be a string")
                selections[f"{base}_values_{pref_id}_"] = (
                    None if selected is None else frozenset(v.strip() for v in selected.split(",") if v.strip())
                )

    for i, channel in enumerate(_list(raw.get("channels"), f"{path}.channels")):
        ch_path = f"{path}.channels[{i}]"
        _answer(answers, f"consents_channels_{_id(channel, ch_path)}_enabled", channel.get("enabled"), f"{ch_path}.enabled")

    return ConsentState(answers, selections)


def _require(condition: bool, path: str, problem: str) -> None:
    if not condition:
        raise InvalidWebhook(f"{path} {problem}")


def _list(raw: Any, path: str) -> list[dict]:
    if raw is None:
        return []
    _require(isinstance(raw, list), path, "must be a list")
    for i, item in enumerate(raw):
        _require(isinstance(item, dict), f"{path}[{i}]", "must be an object")
    return raw


def _id(item: dict, path: str) -> str:
    value = item.get("id")
    _require(isinstance(value, str) and value != "", f"{path}.id", "must be a non-empty string")
    return value


def _answer(answers: dict[str, bool], key: str, enabled: Any, path: str) -> None:
    _require(enabled is None or isinstance(enabled, bool), path, "must be true, false or null")
    if enabled is not None:
        answers[key] = enabled
