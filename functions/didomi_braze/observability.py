"""Logger and metrics, one instance each per container (service name and namespace come from POWERTOOLS_*).

Logs never carry a Braze API key, a webhook token or a raw user id: users appear as `user_ref`, a keyed hash
that lets an operator follow one user's events without reading who the user is.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import threading

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit, single_metric

logger = Logger()
metrics = Metrics()


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
    return hmac.new(key.encode(), identity_key.encode(), hashlib.sha256).hexdigest()[:16]
