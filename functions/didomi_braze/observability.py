"""Logger and metrics, one instance each per container (service name and namespace come from POWERTOOLS_*).

Logs never carry a Braze API key, a webhook token or a raw user id: users appear as `user_ref`, a keyed hash
that lets an operator follow one user's events without reading who the user is.
"""

from __future__ import annotations

import hashlib
import hmac

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit, single_metric

logger = Logger()
metrics = Metrics()


def count(name: str, value: int = 1) -> None:
    metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)


def count_by(name: str, dimension: str, label: str, value: int = 1) -> None:
    """A count both in total and split by a low-cardinality label (skip reason, dead-letter reason)."""
    count(name, value)
    with single_metric(
        name=name, unit=MetricUnit.Count, value=value, namespace=metrics.namespace, default_dimensions=metrics.default_dimensions
    ) as metric:
        metric.add_dimension(name=dimension, value=label)


def user_ref(key: str, identity_key: str) -> str:
    return hmac.new(key.encode(), identity_key.encode(), hashlib.sha256).hexdigest()[:16]
