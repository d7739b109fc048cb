"""The connector document: Braze credentials, options and mappings, in Didomi's own integration format.

Parsed once into a typed `ConnectorConfig`. Every problem is reported with the field it concerns; the API key
is never part of a message (nor of the object's repr).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from .errors import ConfigurationError

EMAIL_OPTED_IN = "OPTED_IN"
EMAIL_UNSUBSCRIBED = "UNSUBSCRIBED"
USER_IDENTIFIERS = ("external_id", "email")

# Braze REST endpoints by dashboard instance code (braze.com/docs/api/basics/#endpoints).
INSTANCE_ENDPOINTS = {
    **{f"US-0{n}": f"https://rest.iad-0{n}.braze.com" for n in range(1, 9)},
    "US-10": "https://rest.us-10.braze.com",
    "EU-01": "https://rest.fra-01.braze.eu",
    "EU-02": "https://rest.fra-02.braze.eu",
    "AU-01": "https://rest.au-01.braze.com",
    "ID-01": "https://rest.id-01.braze.com",
    "JP-01": "https://rest.jp-01.braze.com",
    "KR-01": "https://rest.kr-01.braze.com",
}
_OFFICIAL_HOSTS = frozenset(INSTANCE_ENDPOINTS.values())
_LOOPBACK = re.compile(r"^http://(127\.0\.0\.1|localhost):(\d{1,5})$")
_MAPPING_VALUE = re.compile(r"^consents_(purposes|channels)_.+_enabled$")


@dataclass(frozen=True)
class ConnectorConfig:
    server: str
    api_key: str = field(repr=False)
    regulations: frozenset[str] = frozenset({"gdpr"})
    user_identifier: str = "external_id"
    upsert_mode: bool = False
    email_opted_in: str | None = None  # mapping value behind OPTED_IN
    email_unsubscribed: str | None = None  # mapping value behind UNSUBSCRIBED
    subscription_groups: tuple[tuple[str, str], ...] = ()  # (subscription group id, mapping value)

    @cached_property  # read for every event; computed once per parsed document
    def inputs(self) -> tuple[str, ...]:
        """Every Didomi input (mapping value) the mappings read, once each."""
        values = (self.email_opted_in, self.email_unsubscribed, *(value for _, value in self.subscription_groups))
        return tuple(dict.fromkeys(v for v in values if v))


def parse_connector_document(text: str, allow_loopback: bool = False) -> ConnectorConfig:
    """Parse and validate the connector document; raise ConfigurationError listing every problem."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ConfigurationError(_json_problem(text, exc)) from None
    if not isinstance(doc, dict):
        raise ConfigurationError("the connector document must be a JSON object")

    problems: list[str] = []
    if doc.get("type_id") != "braze":
        problems.append('type_id must be "braze"')

    auth = doc.get("authentication")
    api_key, server = "", ""
    if not isinstance(auth, dict):
        problems.append("authentication is required and must be an object with api_key and server")
    else:
        api_key = auth.get("api_key")
        if not isinstance(api_key, str) or not api_key.strip() or api_key.startswith("<"):
            problems.append("authentication.api_key is required: a Braze REST API key (string)")
            api_key = ""
        server = _server(auth.get("server"), allow_loopback, problems)

    props = doc.get("properties", {})
    regulations: frozenset[str] = frozenset({"gdpr"})
    user_identifier = "external_id"
    if not isinstance(props, dict):
        problems.append("properties must be an object")
    else:
        raw_regs = props.get("regulations", ["gdpr"])
        if not isinstance(raw_regs, list) or not raw_regs or not all(isinstance(r, str) and r for r in raw_regs):
            problems.append('properties.regulations must be a non-empty list of strings, such as ["gdpr"]')
        else:
            regulations = frozenset(r.lower() for r in raw_regs)
        user_identifier = props.get("user_identifier", "external_id")
        if user_identifier not in USER_IDENTIFIERS:
            problems.append('properties.user_identifier must be "external_id" or "email"')

    upsert = doc.get("upsert_mode", False)
    if not isinstance(upsert, bool):
        problems.append("upsert_mode must be true or false")

    opted_in, unsubscribed, groups = _mappings(doc.get("mappings"), problems)
    if problems:
        raise ConfigurationError(problems)
    return ConnectorConfig(
        server=server,
        api_key=api_key,
        regulations=regulations,
        user_identifier=user_identifier,
        upsert_mode=upsert,
        email_opted_in=opted_in,
        email_unsubscribed=unsubscribed,
        subscription_groups=tuple(groups),
    )


def _server(raw: Any, allow_loopback: bool, problems: list[str]) -> str:
    if not isinstance(raw, str) or not raw.strip():
        problems.append("authentication.server is required: a Braze REST endpoint URL or instance code such as EU-01")
        return ""
    value = raw.strip().rstrip("/")
    if value.upper() in INSTANCE_ENDPOINTS:
        return INSTANCE_ENDPOINTS[value.upper()]
    if value.lower() in _OFFICIAL_HOSTS:
        return value.lower()
    loopback = _LOOPBACK.match(value)
    if loopback and allow_loopback and 0 < int(loopback.group(2)) < 65536:
        return value
    hint = " (loopback servers need BRAZE_ALLOW_LOOPBACK=true, for local runs only)" if loopback else ""
    problems.append(
        f"authentication.server{_shown(value)} is not a Braze REST endpoint{hint}; use an instance code "
        f"({', '.join(INSTANCE_ENDPOINTS)}) or its https://rest.… URL"
    )
    return ""


def _shown(value: str) -> str:
    """The server's value, in a message, only as far as it is a URL's origin: swapped with the API key by mistake, the
    value is a secret, and the message is logged on every request while the document is wrong. A value shaped like
    an instance code (EU-09) is shown whole: no API key is that short, and a mistyped code is the usual mistake."""
    if re.fullmatch(r"[A-Za-z]{2,3}-\d{1,2}", value):
        return f" {value!r}"
    origin = re.match(r"^(https?://[A-Za-z0-9.-]{1,100}(:\d{1,5})?)(/|$)", value)
    return f" {origin.group(1)!r}" if origin else ""


def _mappings(raw: Any, problems: list[str]) -> tuple[str | None, str | None, list[tuple[str, str]]]:
    if not isinstance(raw, list) or not raw:
        problems.append("mappings must be a non-empty list of {id, value} objects")
        return None, None, []
    seen: set[str] = set()
    email: dict[str, str] = {}
    groups: list[tuple[str, str]] = []
    for i, item in enumerate(raw):
        where = f"mappings[{i}]"
        if not isinstance(item, dict):
            problems.append(f"{where} must be an object with id and value")
            continue
        target, value = item.get("id"), item.get("value")
        if not isinstance(target, str) or not target.strip():
            problems.append(f"{where}.id must be a non-empty string: OPTED_IN, UNSUBSCRIBED or a subscription group id")
            continue
        if target in seen:
            problems.append(f"{where}.id {target!r} is mapped twice; each id may appear once")
            continue
        seen.add(target)
        if not isinstance(value, str) or not _MAPPING_VALUE.match(value):
            problems.append(
                f"{where}.value must name a consent, such as consents_purposes_<purpose>_enabled "
                "or consents_channels_<channel>_enabled"
            )
            continue
        if target in (EMAIL_OPTED_IN, EMAIL_UNSUBSCRIBED):
            email[target] = value
        else:
            groups.append((target, value))
    return email.get(EMAIL_OPTED_IN), email.get(EMAIL_UNSUBSCRIBED), groups


def _json_problem(text: str, exc: ValueError) -> str:
    """Say why the document is not JSON. Didomi's docs show it with comments and trailing commas."""
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("//") or stripped.startswith("/*") or re.search(r"[,{\[]\s*//", line):
            return (
                f"the connector document is not valid JSON: line {number} has a // comment, as in Didomi's "
                "documentation example; remove the comments (and any trailing commas): JSON allows neither"
            )
    trailing = re.search(r",\s*[}\]]", text)
    if trailing:
        number = text.count("\n", 0, trailing.start()) + 1
        return (
            f"the connector document is not valid JSON: line {number} has a trailing comma before a closing "
            "bracket, as in Didomi's documentation example; remove it"
        )
    # JSONDecodeError's own message carries a position, never the text itself.
    return (
        f"the connector document is not valid JSON: {getattr(exc, 'msg', 'cannot parse')} at line {getattr(exc, 'lineno', '?')}"
    )
