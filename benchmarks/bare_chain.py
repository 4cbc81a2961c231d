"""Bare Ray Serve with one deployment per step: the fraud pipeline's three steps chained by handles.

What Ray Serve gives a chain of hops, next to which Corral's `placement: own` is measured: the
same step objects (benchmarks.fraud_steps), each in its own deployment, tables carried as Arrow
IPC bytes (cheaper for Serve than pickled tables), each response handed to the next step without a
round trip through the ingress. No auth, logging, traffic or micro-batching.
"""

from __future__ import annotations

from typing import Any, cast

import pyarrow as pa
from ray import serve
from ray.serve.deployment import Application, Deployment
from ray.serve.handle import DeploymentHandle
from starlette.requests import Request
from starlette.responses import Response

from benchmarks.bare_serve import PROBE_REPLY, REPO
from benchmarks.fraud_steps import FraudSteps, step_configs
from pipelines.codecs.arrow import STREAM_TYPE, decode_arrow, encode_arrow
from pipelines.codecs.base import WireFormat
from pipelines.codecs.records import decode_records, encode_records
from pipelines.ipc import table_from_ipc, table_to_ipc

APP = "bench-bare-chain"
ROUTE_PREFIX = "/bench-bare-chain"
STAGES = ("scale", "model", "threshold")


@serve.deployment(max_ongoing_requests=1000)
class BareStep:
    """One of the three steps: IPC bytes in, IPC bytes out."""

    def __init__(self, model: bytes, configs: dict[str, Any], stage: str) -> None:
        steps = FraudSteps(model, configs["scale"], configs["columns"], configs["threshold"])
        self.step = getattr(steps, stage)

    def __call__(self, payload: bytes) -> bytes:
        return table_to_ipc(self.step(table_from_ipc(payload)))


@serve.deployment(max_ongoing_requests=1000)
class BareChain:
    """The ingress: decode, three handle hops, encode."""

    def __init__(self, scale: DeploymentHandle, model: DeploymentHandle, threshold: DeploymentHandle) -> None:
        self.handles = (scale, model, threshold)

    async def __call__(self, request: Request) -> Response:
        if request.method != "POST":
            return Response(PROBE_REPLY, media_type="text/plain")
        body = await request.body()
        arrow = request.headers.get("content-type", "").startswith(STREAM_TYPE)
        table = decode_arrow(body, WireFormat.ARROW_STREAM).table if arrow else decode_records(body).table
        response = self.handles[0].remote(table_to_ipc(table))
        for handle in self.handles[1:]:
            response = handle.remote(response)
        out: pa.Table = table_from_ipc(await response)
        payload, headers = encode_arrow(out, WireFormat.ARROW_STREAM) if arrow else encode_records(out)
        return Response(payload, media_type=headers["content-type"])


def application(model: bytes, spec: dict[str, Any]) -> Application:
    """The bare chain app for ONNX `model` and the demo pipeline `spec`."""
    configs = step_configs(spec)
    options = {"num_cpus": 0.5, "runtime_env": {"env_vars": {"PYTHONPATH": str(REPO)}}}
    steps = [
        cast(Deployment, BareStep).options(name=stage, ray_actor_options=options).bind(model, configs, stage)
        for stage in STAGES
    ]
    return cast(Deployment, BareChain).options(ray_actor_options=options).bind(*steps)
