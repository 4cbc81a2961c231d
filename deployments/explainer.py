"""The explainer of one pipeline: an alibi host in its own Serve app, created on demand, idle at zero.

alibi is synchronous and CPU-bound, so each explanation runs in a worker thread. Its predict calls
run the explained variant's chain as whole batches: the worker thread hands each batch to the
replica's event loop and blocks (itself, not the loop) until the reply. The chain is built here
from the same step objects the router runs (pipelines.loading): inline steps in-process, `own`
steps through their deployments' handles, so a predict batch pays no hop to the router. A variant
with uploaded step code inline goes through the router instead (this process lacks its modules).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
import uuid
from typing import Any, cast

import pyarrow as pa
from ray import serve

from deployments.health import HEALTH_CHECK_PERIOD_S
from deployments.names import ROUTER_DEPLOYMENT, app_name, step_deployment_name
from deployments.remote_segment import RemoteSegment
from explain.engine import ExplainerCache, explain
from explain.predictor import Progress
from explain.request import parse_request
from pipelines.loading import FetchArtifact, load_step
from pipelines.placement import segments
from pipelines.spec import StepSpec
from serving.errors import as_domain_error
from serving.load import BACKLOG_METRIC
from serving.segments import InlineSegment, Segment, run_segments

log = logging.getLogger("corral.explain")
PROGRESS_LOG_S = 5.0
HANDLE_GRACE_S = 10.0


@serve.deployment(
    max_ongoing_requests=4, ray_actor_options={"num_cpus": 0.5}, health_check_period_s=HEALTH_CHECK_PERIOD_S
)
class Explainer:
    """`explain(job_id, body, reference, context)` for one pipeline; fitted explainers cached per version."""

    def __init__(self, workspace: str, pipeline: str, fetch_artifact: FetchArtifact, idle_s: float = 300.0) -> None:
        self.app = app_name(workspace, pipeline)
        self.idle_s = idle_s
        self.in_flight = 0
        self.last_used = time.monotonic()
        self.router = serve.get_deployment_handle(ROUTER_DEPLOYMENT, app_name=self.app)
        self.fetch_artifact = fetch_artifact
        self.chains: dict[tuple[int, str], list[Segment] | None] = {}
        self.loop = asyncio.get_running_loop()
        self.cache = ExplainerCache(max_entries=8)
        self.jobs: dict[str, Progress] = {}
        self.jobs_lock = threading.Lock()

    async def explain(
        self,
        job_id: str,
        body: dict[str, Any],
        reference: pa.Table,
        context: dict[str, Any],
        plan: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """One explanation as the contract's `{"meta", "data"}`; `context` (pipeline, version, variant,
        reference description, budget) goes into `meta`; `plan` is the variant's steps and models.
        Domain errors come back as themselves."""
        self.in_flight += 1
        try:
            return await self._explain(job_id, body, reference, context, plan)
        finally:
            self.in_flight -= 1
            self.last_used = time.monotonic()

    def record_autoscaling_stats(self) -> dict[str, float]:
        """Serve asks every few seconds. Its own count of requests in flight misses short explain
        calls (sampled, then averaged), so the replica says whether it was used in the last `idle_s`:
        the explainer scales to zero only after that long without a request."""
        busy = self.in_flight > 0 or time.monotonic() - self.last_used < self.idle_s
        return {BACKLOG_METRIC: 1.0 if busy else 0.0}

    async def _explain(
        self,
        job_id: str,
        body: dict[str, Any],
        reference: pa.Table,
        context: dict[str, Any],
        plan: dict[str, Any] | None,
    ) -> dict[str, Any]:
        request = parse_request(body)
        version, variant = int(context["version"]), str(context["variant"])
        self.cache.keep_scope((version,))  # fitted explainers of other pipeline versions are stale
        self.chains = {k: v for k, v in self.chains.items() if k[0] == version}
        progress = Progress(request.method, float(context["budget_s"]))
        job_id = job_id or uuid.uuid4().hex
        with self.jobs_lock:
            self.jobs[job_id] = progress
        reporter = self.loop.create_task(self._log_progress(job_id, progress))

        def predict(table: pa.Table) -> pa.Table:
            chain = self._chain(version, variant, plan)
            if chain is not None and all(isinstance(s, InlineSegment) and s.is_sync for s in chain):
                for segment in chain:  # all in-process and sync: run here, on alibi's worker thread
                    table = cast(InlineSegment, segment).run_sync(table)
                return table
            future = asyncio.run_coroutine_threadsafe(self._predict(table, variant, chain), self.loop)
            # A worker thread waits, the event loop keeps serving; a stuck router cannot outlive the budget.
            wait_s = max(progress.budget_s - progress.elapsed_s, 0.0) + HANDLE_GRACE_S
            try:
                return future.result(timeout=wait_s)
            except concurrent.futures.TimeoutError:
                future.cancel()
                progress.check()
                raise

        try:
            explanation = await asyncio.to_thread(
                explain, request, reference, predict, progress, self.cache, (version, variant)
            )
        finally:
            reporter.cancel()
            with self.jobs_lock:
                self.jobs.pop(job_id, None)
        return {"meta": {"job_id": job_id, **context, **explanation.meta}, "data": explanation.data}

    def _chain(self, version: int, variant: str, plan: dict[str, Any] | None) -> list[Segment] | None:
        """The variant's chain in this process (built once per version), None to go through the router."""
        key = (version, variant)
        if key not in self.chains:
            self.chains[key] = None if plan is None else self._build_chain(variant, plan)
        return self.chains[key]

    def _build_chain(self, variant: str, plan: dict[str, Any]) -> list[Segment] | None:
        steps = [StepSpec.model_validate(raw) for raw in plan["steps"]]
        if any(step.inline and step.code is not None for step in steps):
            return None
        chain: list[Segment] = []
        for segment in segments(steps):
            if segment.inline:
                models = plan["models"]
                loaded = [(s.name, load_step(s, self.fetch_artifact, models.get(s.name))) for s in segment.steps]
                chain.append(InlineSegment(loaded))
            else:
                names = [step_deployment_name(variant, s.name) for s in segment.steps]
                chain.append(RemoteSegment([serve.get_deployment_handle(n, app_name=self.app) for n in names]))
        return chain

    async def _predict(self, table: pa.Table, variant: str, chain: list[Segment] | None) -> pa.Table:
        if chain is not None:
            return await run_segments(chain, table)
        try:
            result: pa.Table = await self.router.predict.remote(table, variant)
        except Exception as exc:
            raise as_domain_error(exc) from exc
        return result

    async def _log_progress(self, job_id: str, progress: Progress) -> None:
        while True:
            await asyncio.sleep(PROGRESS_LOG_S)
            log.info("explanation %s: %s", job_id, progress.report())

    async def progress(self) -> list[dict[str, Any]]:
        """The explanations running in this replica, with what they have done so far."""
        with self.jobs_lock:
            return [{"job_id": job_id, **p.report()} for job_id, p in self.jobs.items()]
