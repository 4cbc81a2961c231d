"""The explainer of one pipeline: an alibi host in its own Serve app, created on demand, idle at zero.

alibi is synchronous and CPU-bound, so each explanation runs in a worker thread. Its predict calls
go to the pipeline's router as whole batches: the worker thread hands each batch to the replica's
event loop, which awaits the router handle, and blocks (itself, not the loop) until the reply.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import uuid
from typing import Any

import pyarrow as pa
from ray import serve

from deployments.errors import as_domain_error
from deployments.names import ROUTER_DEPLOYMENT, app_name
from explain.engine import ExplainerCache, explain
from explain.predictor import Progress
from explain.request import parse_request

log = logging.getLogger("corral.explain")
PROGRESS_LOG_S = 5.0
HANDLE_GRACE_S = 10.0


@serve.deployment(max_ongoing_requests=4, ray_actor_options={"num_cpus": 0.5})
class Explainer:
    """`explain(job_id, body, reference, context)` for one pipeline; fitted explainers cached per version."""

    def __init__(self, workspace: str, pipeline: str) -> None:
        self.router = serve.get_deployment_handle(ROUTER_DEPLOYMENT, app_name=app_name(workspace, pipeline))
        self.loop = asyncio.get_running_loop()
        self.cache = ExplainerCache(max_entries=8)
        self.jobs: dict[str, Progress] = {}
        self.jobs_lock = threading.Lock()

    async def explain(
        self, job_id: str, body: dict[str, Any], reference: pa.Table, context: dict[str, Any]
    ) -> dict[str, Any]:
        """One explanation as the contract's `{"meta", "data"}`; `context` (pipeline, version, variant,
        reference description, budget) goes into `meta`. Domain errors come back as themselves."""
        request = parse_request(body)
        version, variant = int(context["version"]), str(context["variant"])
        self.cache.keep_scope((version,))  # fitted explainers of other pipeline versions are stale
        progress = Progress(request.method, float(context["budget_s"]))
        job_id = job_id or uuid.uuid4().hex
        with self.jobs_lock:
            self.jobs[job_id] = progress
        reporter = self.loop.create_task(self._log_progress(job_id, progress))

        def predict(table: pa.Table) -> pa.Table:
            future = asyncio.run_coroutine_threadsafe(self._predict(table, variant), self.loop)
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

    async def _predict(self, table: pa.Table, variant: str) -> pa.Table:
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
