"""Just enough of CloudWatch Logs Insights to run the template's saved queries over log lines in tests (moto accepts
`start_query` but applies no `filter`). It understands only what those queries use, and refuses anything else, so
a query the template changes to something it cannot check fails here rather than being half-evaluated.

Like Logs Insights, it discovers the fields of a JSON log event from its keys (nested keys joined with dots), and
`@timestamp`, `@log` and `@message` are there for every event.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass

FILTER = re.compile(r'^filter\s+(@?[A-Za-z_][\w.]*)\s*=\s*"([^"]*)"$')
SORT = re.compile(r"^sort\s+(@?[A-Za-z_][\w.]*)\s+(asc|desc)$")
LIMIT = re.compile(r"^limit\s+(\d+)$")


class UnsupportedQuery(Exception):
    pass


@dataclass(frozen=True)
class LogEvent:
    timestamp_ms: int
    log_group: str
    message: str


@dataclass(frozen=True)
class Query:
    fields: tuple[str, ...]
    filters: tuple[tuple[str, str], ...]
    sort: tuple[str, str] | None
    limit: int | None


def parse(query: str) -> Query:
    fields: list[str] = []
    filters: list[tuple[str, str]] = []
    sort, limit = None, None
    for command in (part.strip() for part in query.split("|")):
        if command.startswith("fields "):
            fields += [f.strip() for f in command[len("fields ") :].split(",")]
        elif match := FILTER.match(command):
            filters.append((match.group(1), match.group(2)))
        elif match := SORT.match(command):
            sort = (match.group(1), match.group(2))
        elif match := LIMIT.match(command):
            limit = int(match.group(1))
        else:
            raise UnsupportedQuery(f"not understood by this stand-in: {command!r}")
    return Query(tuple(fields), tuple(filters), sort, limit)


def discovered(event: LogEvent) -> dict[str, str]:
    """The fields Logs Insights would discover in the event."""
    fields = {
        "@timestamp": _insights_time(event.timestamp_ms),
        "@log": f"123456789012:{event.log_group}",
        "@message": event.message,
    }
    try:
        body = json.loads(event.message)
    except ValueError:
        return fields
    if isinstance(body, dict):
        fields.update(_flatten(body))
    return fields


def run(query: str, events: Iterable[LogEvent]) -> list[dict[str, str]]:
    parsed = parse(query)
    rows = [(event, discovered(event)) for event in events]
    rows = [(e, f) for e, f in rows if all(f.get(name) == value for name, value in parsed.filters)]
    if parsed.sort:
        name, order = parsed.sort
        rows.sort(
            key=lambda pair: pair[0].timestamp_ms if name == "@timestamp" else pair[1].get(name, ""), reverse=order == "desc"
        )
    if parsed.limit is not None:
        rows = rows[: parsed.limit]
    return [{name: f[name] for name in parsed.fields if name in f} for _, f in rows]


def _flatten(value: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, dict):
            out.update(_flatten(item, name + "."))
        else:
            out[name] = item if isinstance(item, str) else json.dumps(item)
    return out


def _insights_time(milliseconds: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(milliseconds / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
