"""The log lines and the EMF metrics come out exactly as Powertools' own formatter and provider write them: `trace`
reads the lines, the alarms read the metrics, and observability.py only takes costs out of writing them."""

import contextlib
import hashlib
import hmac
import io
import json
import logging
import sys

import pytest
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter
from aws_lambda_powertools.metrics import MetricResolution, MetricUnit
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider

from didomi_braze.observability import _EmfProvider, _Formatter, user_ref

LAMBDA_KEYS = {
    "cold_start": True,
    "function_name": "WebhookFunction",
    "function_memory_size": 256,
    "function_arn": "arn:aws:lambda:eu-central-1:123456789012:function:WebhookFunction",
    "function_request_id": "req-1",
}


class Unserialisable:
    def __str__(self) -> str:
        return "an object"


def _records() -> list[logging.LogRecord]:
    def record(msg, args=(), extra=None, exc_info=None, level=logging.INFO) -> logging.LogRecord:
        return logging.getLogger("observability-test").makeRecord(
            "observability-test", level, __file__, 42, msg, args, exc_info, "_deliver", extra
        )

    try:
        raise ValueError("boom")
    except ValueError:
        exc_info = sys.exc_info()
    delivered = {
        "event_type": "event.created",
        "event_id": "event.created:1",
        "event_time": "2026-05-04T12:00:00.000000Z",
        "user_ref": "5ffe26cfe4108632",
        "fields": {"email_subscribe": "opted_in", "group:3f1c": "subscribed"},
        "outcome": "delivered",
        "braze_status": 201,
    }
    return [
        record("event delivered to Braze", extra=delivered),
        record("event skipped", extra={**delivered, "fields": None, "detail": "ünïcode ✓"}),
        record("webhook refused: missing or wrong credentials", extra={"auth_mode": "bearer"}, level=logging.WARNING),
        record("event not accepted", extra={"problem": Unserialisable(), "location": "an extra called location"}),
        record("could not give a lease back", exc_info=exc_info, level=logging.ERROR),
        record("user %s did %d things", args=("u", 3)),
        record('{"a": [1, 2]}'),
        record("true"),
        record("null"),
        record("NaN"),
        record("Infinity"),
        record("  42"),
        record("-1.5"),
        record("fields owed to Braze queued"),
        record("élan"),
        record(""),
        record({"a dict": "message"}),
        record(17),
    ]


@pytest.mark.parametrize("record", _records(), ids=lambda r: str(r.msg)[:30])
def test_a_log_line_is_the_one_powertools_writes(record: logging.LogRecord, monkeypatch):
    monkeypatch.setenv("_X_AMZN_TRACE_ID", "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1")
    theirs = LambdaPowertoolsFormatter(service="didomi-braze-sync", sampling_rate=None)
    ours = _Formatter(service="didomi-braze-sync", sampling_rate=None)
    for formatter in (theirs, ours):
        formatter.append_keys(**LAMBDA_KEYS)
    assert ours.format(record) == theirs.format(record)


def test_a_reserved_key_that_is_not_a_format_string_fails_as_in_powertools():
    record = _records()[0]
    for formatter in (LambdaPowertoolsFormatter(), _Formatter()):
        formatter.append_keys(timestamp=12)
        with pytest.raises(ValueError, match="need to be type 'str'"):
            formatter.format(record)


def _run(provider: AmazonCloudWatchEMFProvider, calls) -> tuple[list, dict]:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        for name, unit, value, resolution in calls:
            try:
                provider.add_metric(name=name, unit=unit, value=value, resolution=resolution)
            except Exception as exc:
                print(json.dumps({"error": type(exc).__name__}))
    flushed = [json.loads(line) for line in printed.getvalue().splitlines()]
    for blob in flushed:
        blob.get("_aws", {}).pop("Timestamp", None)
    return flushed, json.loads(json.dumps(provider.metric_set))


def test_counts_leave_the_metric_set_and_its_flushes_as_powertools_add_metric_does():
    calls = [("EventsReceived", MetricUnit.Count, 1, 60), ("BrazeRequests", MetricUnit.Count, 1, 60)]
    calls += [("EventsDelivered", MetricUnit.Count, 1, 60)] * 150  # past 100 values: add_metric flushes
    calls += [(f"Metric{i}", MetricUnit.Count, i, 60) for i in range(120)]  # past 100 names: it flushes again
    calls += [
        (" Padded ", MetricUnit.Count, 1, 60),
        (" Padded ", MetricUnit.Count, 2, 60),
        ("", MetricUnit.Count, 1, 60),  # too short: add_metric refuses it
        ("Seconds", MetricUnit.Seconds, 1.5, 60),
        ("Seconds", "Count", 2, 60),
        ("HighResolution", MetricUnit.Count, 1, MetricResolution.High),
        ("HighResolution", MetricUnit.Count, 1, 60),
        ("Flag", MetricUnit.Count, True, 60),
        ("EventsReceived", MetricUnit.Count, 3, 60),
    ]
    kwargs = {"namespace": "DidomiBrazeSync", "service": "didomi-braze-sync"}
    assert _run(_EmfProvider(**kwargs), calls) == _run(AmazonCloudWatchEMFProvider(**kwargs), calls)


def test_a_user_ref_is_the_first_16_hex_digits_of_hmac_sha256_whichever_key_came_before():
    # Operators' saved queries and `make trace` look users up by these: the value must never change.
    assert user_ref("webhook-token", "external_id:customer-42") == "bc4860fa32c0bed5"
    for key, identity in [("old-token", "external_id:customer-42"), ("webhook-token", "email:a@example.com")] * 2:
        assert user_ref(key, identity) == hmac.new(key.encode(), identity.encode(), hashlib.sha256).hexdigest()[:16]
