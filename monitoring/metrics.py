"""Corral's Prometheus metrics, defined once: name, help, labels, buckets.

The deployments register these with `ray.serve.metrics` (deployments/metrics.py); Ray exports them
on its metrics port (`corral up` sets it, default 8080) with the prefix `ray_`, and Serve adds the
labels `application`, `deployment` and `replica`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

LATENCY_BUCKETS_MS = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0)
PIPELINE = ("workspace", "pipeline")


@dataclass(frozen=True)
class MetricDef:
    name: str
    kind: Literal["counter", "histogram", "gauge"]
    help: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] = ()


REQUESTS = MetricDef(
    "corral_requests", "counter", "Inference requests by pipeline, variant and HTTP status",
    (*PIPELINE, "variant", "status"),
)  # fmt: skip
ROWS = MetricDef("corral_rows", "counter", "Rows inferred (answered with 200)", (*PIPELINE, "variant"))
REQUEST_LATENCY = MetricDef(
    "corral_request_latency_ms", "histogram", "Router latency of answered requests, decode to encode",
    (*PIPELINE, "variant"), LATENCY_BUCKETS_MS,
)  # fmt: skip
STEP_LATENCY = MetricDef(
    "corral_step_latency_ms", "histogram", "Time one step deployment spends on a call",
    (*PIPELINE, "variant", "step"), LATENCY_BUCKETS_MS,
)  # fmt: skip
SHADOW_CALLS = MetricDef(
    "corral_shadow_calls", "counter", "Shadow calls by outcome: ok, error (incl. timeout) or dropped",
    (*PIPELINE, "variant", "outcome"),
)  # fmt: skip
VALIDATION_FAILURES = MetricDef(
    "corral_validation_failures", "counter", "Rows a validation flagged", (*PIPELINE, "validation")
)
LOG_ROWS_DROPPED = MetricDef(
    "corral_log_rows_dropped", "counter", "Log rows dropped because the log sink was unreachable too long", PIPELINE
)
LOG_ROWS_LOST = MetricDef(
    "corral_log_rows_lost", "counter",
    "Log rows a router replica had queued but not sent when it died (an upper bound; counted by the next replica)",
    PIPELINE,
)  # fmt: skip
ASSAY_SCORE = MetricDef(
    "corral_assay_score", "gauge", "Drift score of an assay's latest window", ("workspace", "assay", "pipeline")
)
ASSAY_STATUS = MetricDef(
    "corral_assay_status", "gauge", "Status of an assay's latest window: 0 ok, 1 warning, 2 alert",
    ("workspace", "assay", "pipeline"),
)  # fmt: skip
ASSAY_ALERTS = MetricDef(
    "corral_assay_alerts", "counter", "Assay windows that ended in alert", ("workspace", "assay", "pipeline")
)

ALL = [
    REQUESTS, ROWS, REQUEST_LATENCY, STEP_LATENCY, SHADOW_CALLS, VALIDATION_FAILURES, LOG_ROWS_DROPPED,
    LOG_ROWS_LOST,     ASSAY_SCORE, ASSAY_STATUS, ASSAY_ALERTS,
]  # fmt: skip
STATUS_CODES = {"ok": 0, "warning": 1, "alert": 2}
