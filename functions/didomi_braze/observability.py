"""Logger and metrics, one instance each per container (service name and namespace come from POWERTOOLS_*).

Logs never carry a Braze API key, a webhook token or a raw user id: users appear as `user_ref`, a keyed hash
that lets an operator follow one user's events without reading who the user is.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import json
import logging
import threading
from collections import defaultdict

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging.formatter import RESERVED_LOG_ATTRS, LambdaPowertoolsFormatter
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.constants import MAX_METRICS

_RESERVED = frozenset(RESERVED_LOG_ATTRS)


class _Formatter(LambdaPowertoolsFormatter):
    """Powertools' JSON formatter, line for line the same output, with three costs of every log line taken out: the
    reserved attribute names are looked up in a set rather than a tuple (once per attribute of the record), a
    message that cannot be JSON (it starts with a letter no JSON text starts with) is not parsed as JSON first,
    and the line is written by one JSON encoder made once (`json.dumps` with options makes one per call)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        if "json_serializer" not in kwargs:  # Powertools' own serializer: json.dumps with these options
            self.json_serializer = json.JSONEncoder(
                default=self.json_default, separators=(",", ":"), indent=self.json_indent, ensure_ascii=False
            ).encode

    def _extract_log_keys(self, log_record: logging.LogRecord) -> dict:
        record_dict = log_record.__dict__.copy()
        record_dict["asctime"] = self.formatTime(record=log_record)
        extras = {k: v for k, v in record_dict.items() if k not in _RESERVED}
        formatted_log: dict = {}
        for keys in (self.log_format, self.thread_safe_get_current_keys()):
            for key, value in keys.items():
                if value and key in _RESERVED:
                    if not isinstance(value, str):
                        return super()._extract_log_keys(log_record)  # Powertools raises its error
                    formatted_log[key] = value % record_dict
                else:
                    formatted_log[key] = value
        formatted_log.update(**extras)
        return formatted_log

    def _extract_log_message(self, log_record: logging.LogRecord):
        message = log_record.msg
        if type(message) is str and not log_record.args and message[:1].isalpha() and message[0] not in "tfnNI":
            return message  # json.loads would fail: only true, false, null, NaN and Infinity start with a letter
        return super()._extract_log_message(log_record)


class _EmfProvider(AmazonCloudWatchEMFProvider):
    """Powertools' EMF provider; a count under a name `add_metric` has accepted before skips the checks and the
    debug message that cost more than the count itself, and leaves the metric set exactly as `add_metric` would.
    Anything else, and a count that fills the set to its limit (where `add_metric` flushes it), takes `add_metric`."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._accepted: set[str] = set()

    def add_metric(self, name, unit, value, resolution=60) -> None:
        metric = self.metric_set.get(name)
        if (
            name in self._accepted
            and unit is MetricUnit.Count
            and resolution == 60
            and type(value) is int
            and len(self.metric_set) < MAX_METRICS - 1
            and (metric is None or len(metric["Value"]) < MAX_METRICS - 1)
        ):
            if metric is None:
                metric = self.metric_set[name] = defaultdict(list)
            metric["Unit"] = MetricUnit.Count.value
            metric["StorageResolution"] = 60
            metric["Value"].append(float(value))
            return
        super().add_metric(name=name, unit=unit, value=value, resolution=resolution)
        if name == name.strip():  # accepted as it is (add_metric stores a name stripped)
            self._accepted.add(name)


logger = Logger(logger_formatter=_Formatter())
_shared = Metrics()  # Powertools' metric, dimension and metadata sets, which every Metrics instance shares
metrics = Metrics(
    provider=_EmfProvider(
        metric_set=_shared.metric_set,
        dimension_set=_shared.dimension_set,
        metadata_set=_shared.metadata_set,
        default_dimensions=_shared.default_dimensions,
    )
)


class _EmfSink:
    """Metrics as CloudWatch embedded metric format, flushed by `@metrics.log_metrics` on each invocation. Powertools'
    metric set is a plain dict: counts from several threads (the workers' parallel users) go through one lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def count(self, name: str, value: int) -> None:
        with self._lock:
            metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)

    def count_by(self, name: str, dimension: str, label: str, value: int) -> None:
        with (
            self._lock,
            single_metric(
                name=name,
                unit=MetricUnit.Count,
                value=value,
                namespace=metrics.namespace,
                default_dimensions=metrics.default_dimensions,
            ) as metric,
        ):
            metric.add_dimension(name=dimension, value=label)


_sink = _EmfSink()


def count(name: str, value: int = 1) -> None:
    _sink.count(name, value)


def count_by(name: str, dimension: str, label: str, value: int = 1) -> None:
    """A count both in total and split by a low-cardinality label (skip reason, dead-letter reason)."""
    _sink.count(name, value)
    _sink.count_by(name, dimension, label, value)


@contextlib.contextmanager
def metrics_to(sink):
    """Send the counts to `sink` (an object with `count` and `count_by`) instead of CloudWatch, for simulations."""
    global _sink
    previous, _sink = _sink, sink
    try:
        yield sink
    finally:
        _sink = previous


def user_ref(key: str, identity_key: str) -> str:
    mac = _keyed(key).copy()
    mac.update(identity_key.encode())
    return mac.hexdigest()[:16]


@functools.lru_cache(maxsize=4)  # the webhook token, and the one it was rotated from
def _keyed(key: str) -> hmac.HMAC:
    """HMAC-SHA256 with the key already absorbed: copying it costs less than keying a new one for each user."""
    return hmac.new(key.encode(), digestmod=hashlib.sha256)
