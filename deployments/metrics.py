"""The metric objects of one replica process, made from monitoring.metrics on first use."""

from __future__ import annotations

from functools import cache
from typing import Any, cast

from ray.serve import metrics as serve_metrics

from monitoring.metrics import MetricDef


@cache
def metric(definition: MetricDef) -> Any:
    """The `ray.serve.metrics` object for a definition (one per process: Ray rejects duplicates)."""
    labels = cast(tuple[str], definition.labels)  # Ray's stub says tuple[str]; it takes any length
    if definition.kind == "counter":
        return serve_metrics.Counter(definition.name, definition.help, tag_keys=labels)
    if definition.kind == "histogram":
        return serve_metrics.Histogram(
            definition.name, definition.help, boundaries=list(definition.buckets), tag_keys=labels
        )
    return serve_metrics.Gauge(definition.name, definition.help, tag_keys=labels)
