"""Bare Ray Serve: the fraud pipeline's three steps inside one ingress deployment, and nothing else.

Ray Serve's own limit for this workload, next to which Corral's per-request work (auth, traffic
split, logging, metrics, headers) is measured: the same step objects and codecs Corral uses
(benchmarks.fraud_steps), but no auth, no logging, no traffic policy. `POST` takes the peer's
bodies: pandas records JSON (any Content-Type but an Arrow stream's) or an Arrow IPC stream, and
replies in kind; any other method answers PROBE_REPLY (a readiness probe).

Ray workers import this module by name; `benchmarks` is not part of the installed package, so
`application()` puts the repository on the replica's PYTHONPATH.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

import orjson
import pyarrow as pa
from ray import serve
from ray.serve.deployment import Application, Deployment
from starlette.requests import Request
from starlette.responses import Response

from benchmarks.fraud_steps import FraudSteps, step_configs
from pipelines.errors import CorralError

REPO = Path(__file__).resolve().parents[1]
APP = "bench-bare"
ROUTE_PREFIX = "/bench-bare"
PROBE_REPLY = b"bench-bare ok"  # what a GET answers: tells this app from others on the same port
_CLIENT_ERRORS = (CorralError, pa.ArrowException, ValueError, KeyError, TypeError)


@serve.deployment(max_ongoing_requests=1000, ray_actor_options={"num_cpus": 1})
class BareFraud:
    """The ingress: decode, run the steps, encode. `in_thread` runs them in a worker thread (as Corral's
    inline segment does, to keep the event loop free); by default they run on the event loop."""

    def __init__(
        self,
        model: bytes,
        scale: dict[str, Any],
        columns: list[str],
        threshold: dict[str, Any],
        in_thread: bool = False,
    ) -> None:
        self.steps = FraudSteps(model, scale, columns, threshold)
        self.in_thread = in_thread

    async def __call__(self, request: Request) -> Response:
        if request.method != "POST":
            return Response(PROBE_REPLY, media_type="text/plain")
        body = await request.body()
        content_type = request.headers.get("content-type", "")
        try:
            if self.in_thread:
                payload, media_type = await asyncio.to_thread(self.steps.infer, body, content_type)
            else:
                payload, media_type = self.steps.infer(body, content_type)
        except _CLIENT_ERRORS as exc:
            return Response(orjson.dumps({"error": str(exc)}), status_code=400, media_type="application/json")
        return Response(payload, media_type=media_type)


def application(model: bytes, spec: dict[str, Any], *, in_thread: bool = False) -> Application:
    """The bare app for ONNX `model` and the demo pipeline `spec` (fraud_pipeline_spec's dict)."""
    configs = step_configs(spec)
    options = {"num_cpus": 1, "runtime_env": {"env_vars": {"PYTHONPATH": str(REPO)}}}
    deployment = cast(Deployment, BareFraud).options(ray_actor_options=options)  # serve.deployment's type
    return deployment.bind(model, configs["scale"], configs["columns"], configs["threshold"], in_thread)
