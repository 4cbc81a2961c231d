"""One pipeline step as a Serve deployment: a Python step or an ONNX model, optionally micro-batched."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pyarrow as pa
from ray import serve

from deployments.health import HEALTH_CHECK_PERIOD_S
from deployments.metrics import metric
from monitoring.metrics import STEP_LATENCY
from pipelines.errors import CorralError
from pipelines.ipc import table_from_ipc, table_to_ipc
from pipelines.live_config import StepConfig
from pipelines.loading import FetchArtifact, load_step
from pipelines.spec import StepSpec
from pipelines.step import Step, call_step

log = logging.getLogger("corral.step")


@serve.deployment(max_ongoing_requests=256, health_check_period_s=HEALTH_CHECK_PERIOD_S)
class StepDeployment:
    """Runs one step of one variant. Requests of fewer rows than the batch size are micro-batched."""

    def __init__(self, step: dict[str, Any], fetch_artifact: FetchArtifact) -> None:
        self.spec = StepSpec.model_validate(step)
        self.fetch_artifact = fetch_artifact
        self.model_sha256: str | None = None
        # Model steps get their model from reconfigure(), which Serve calls before the first request.
        self.step: Step | None = None if self.spec.kind == "model" else load_step(self.spec)
        self.max_batch = self.spec.batching.max_batch_size if self.spec.batching else 1
        self.tags = _step_tags()
        if self.spec.batching:
            batched: Any = self._batched  # serve.batch adds these setters at runtime
            batched.set_max_batch_size(self.spec.batching.max_batch_size)
            batched.set_batch_wait_timeout_s(self.spec.batching.wait_ms / 1000)

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Hot-swap: load and warm the new model beside the old one, then switch in one assignment.
        Requests in flight keep the step object they started with, so they finish on the old model."""
        sha = StepConfig.model_validate(user_config).model_sha256
        if self.spec.kind != "model" or sha is None or sha == self.model_sha256:
            return
        self.step = await asyncio.to_thread(self._load_model, sha)
        if self.model_sha256 is not None:
            log.info("step %s swapped model %s -> %s", self.spec.name, self.model_sha256[:12], sha[:12])
        self.model_sha256 = sha

    def _load_model(self, sha256: str) -> Step:
        return load_step(self.spec, self.fetch_artifact, sha256)

    def describe(self) -> dict[str, Any]:
        """Where and how this replica runs its step (for operators and tests)."""
        import ray

        return {
            "step": self.spec.name,
            "kind": self.spec.kind,
            "providers": getattr(self.step, "providers", None),
            "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
            "max_batch_size": self.max_batch,
            "model_sha256": self.model_sha256,
            "replica": serve.get_replica_context().replica_id.unique_id,  # proves in-place updates
        }

    async def __call__(self, payload: pa.Table | bytes) -> pa.Table | bytes:
        """A table in, a table out; Arrow IPC bytes in (what routers send), bytes out."""
        started = time.perf_counter()
        try:
            result = await self._call(table_from_ipc(payload))
            return result if isinstance(payload, pa.Table) else table_to_ipc(result)
        finally:
            metric(STEP_LATENCY).observe((time.perf_counter() - started) * 1000, self.tags)

    async def _call(self, table: pa.Table) -> pa.Table:
        if self.max_batch > 1 and table.num_rows < self.max_batch:
            result = await self._batched(table)
            if isinstance(result, CorralError):
                raise result
            return result  # type: ignore[no-any-return]
        return await call_step(self._step(), table, step_name=self.spec.name)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.002)
    async def _batched(self, tables: list[pa.Table]) -> list[pa.Table]:
        if len(tables) == 1:
            return [await call_step(self._step(), tables[0], step_name=self.spec.name)]
        try:
            merged = pa.concat_tables(tables, promote_options="permissive")
            out = await call_step(self._step(), merged, step_name=self.spec.name)
        except (CorralError, pa.ArrowInvalid, pa.ArrowTypeError):
            # One bad request must not fail its neighbours: run them one by one instead.
            return [await self._alone(t) for t in tables]  # type: ignore[misc]
        results, offset = [], 0
        for t in tables:
            results.append(out.slice(offset, t.num_rows))
            offset += t.num_rows
        return results

    def _step(self) -> Step:
        assert self.step is not None, "a model step is used before reconfigure() loaded its model"
        return self.step

    async def _alone(self, table: pa.Table) -> pa.Table | CorralError:
        try:
            return await call_step(self._step(), table, step_name=self.spec.name)
        except CorralError as exc:
            return exc  # handed back to that caller alone, which raises it


def _step_tags() -> dict[str, str]:
    """Metric labels from where Serve runs this replica: app `<workspace>--<pipeline>`, deployment
    `<variant>.<step>` (see deployments.names)."""
    context = serve.get_replica_context()
    workspace, _, pipeline = context.app_name.partition("--")
    variant, _, step = context.deployment.partition(".")
    return {"workspace": workspace, "pipeline": pipeline, "variant": variant, "step": step}

