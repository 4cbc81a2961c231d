"""The pipeline's ingress deployment: a thin Serve shell around serving.DataPlane and HttpEdge.

It holds what needs Ray: the handles of `own` steps, the control app (token checks), the log
sink, Prometheus metrics, and the inline steps' models, loaded and hot-swapped in reconfigure().
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.requests import Request
from starlette.responses import Response

from deployments.health import HEALTH_CHECK_PERIOD_S
from deployments.metrics import metric
from deployments.names import (
    CONTROL_APP,
    CONTROL_DEPLOYMENT,
    LOG_SINK_DEPLOYMENT,
    LOGS_APP,
    app_name,
    route_prefix,
)
from deployments.remote_segment import RemoteSegment
from monitoring.log_schema import INFERENCES, SHADOWS, InferenceRecord, inference_table, shadow_rows
from monitoring.metrics import (
    LOG_ROWS_DROPPED,
    LOG_ROWS_LOST,
    REQUEST_LATENCY,
    REQUESTS,
    ROWS,
    SHADOW_CALLS,
    STEP_LATENCY,
    MetricDef,
)
from pipelines.errors import InvalidInput, NotReady
from pipelines.frame import as_table
from pipelines.ipc import table_to_ipc
from pipelines.live_config import RouterConfig, RouterLimits
from pipelines.loading import FetchArtifact, load_step
from pipelines.rules import parse_rules
from pipelines.spec import StepSpec
from pipelines.step import Step
from serving.admission import Admission
from serving.auth import AuthCache, FailureLimiter
from serving.dataplane import DataPlane
from serving.errors import as_domain_error
from serving.http import HttpEdge
from serving.load import BACKLOG_METRIC
from serving.log_buffer import LogBuffer, concat_tables
from serving.log_ledger import LogLedger, collect_lost
from serving.segments import CoalescingSegment, InlineSegment, Segment
from serving.shadows import ShadowOutcome

log = logging.getLogger("corral.router")
GIL_SWITCH_INTERVAL_S = 0.0002

# One segment of a variant as the app builder binds it: {"inline": [step spec dicts]} or
# {"own": [bound step deployments]} (Serve turns those into handles before __init__).
SegmentPlan = dict[str, list[Any]]


class _Unloaded:
    """Stands for an inline model step until reconfigure() has loaded its model."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, table: pa.Table) -> pa.Table:
        raise NotReady(f"model step {self.name!r} is still loading its model: retry shortly")


class _Telemetry:
    """Prometheus metrics at a small cost per request: label dicts made once per variant, counters
    summed here and added to Ray's every second (histograms take each observation as it comes)."""

    FLUSH_S = 1.0

    def __init__(self, workspace: str, pipeline: str) -> None:
        self.tags = {"workspace": workspace, "pipeline": pipeline}
        self.by_variant: dict[str, dict[str, str]] = {}
        self.by_status: dict[tuple[int, str], dict[str, str]] = {}
        self.counts: dict[tuple[str, int], tuple[MetricDef, dict[str, str], float]] = {}
        self.flusher: asyncio.Task[None] | None = None

    def variant_tags(self, variant: str) -> dict[str, str]:
        tags = self.by_variant.get(variant)
        if tags is None:
            tags = self.by_variant[variant] = {**self.tags, "variant": variant}
        return tags

    def _count(self, definition: MetricDef, tags: dict[str, str], value: float) -> None:
        key = (definition.name, id(tags))  # tag dicts are the cached ones: one entry per label set
        entry = self.counts.get(key)
        self.counts[key] = (definition, tags, value + (entry[2] if entry else 0.0))
        if self.flusher is None:
            self.flusher = asyncio.get_running_loop().create_task(self._flush_forever())

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.FLUSH_S)
            self.flush()

    def flush(self) -> None:
        counts, self.counts = self.counts, {}
        for definition, tags, value in counts.values():
            metric(definition).inc(value, tags)

    def served(self, variant: str, rows: int, latency_ms: float) -> None:
        tags = self.variant_tags(variant)
        self._count(ROWS, tags, rows)
        metric(REQUEST_LATENCY).observe(latency_ms, tags)

    def step_observer(self, variant: str) -> Callable[[str, float], None]:
        """Records inline steps' latencies under the labels a step deployment would use."""
        by_step: dict[str, dict[str, str]] = {}
        histogram = metric(STEP_LATENCY)

        def observe(step: str, ms: float) -> None:
            tags = by_step.get(step)
            if tags is None:
                tags = by_step[step] = {**self.variant_tags(variant), "step": step}
            histogram.observe(ms, tags)

        return observe

    def count_request(self, status: int, variant: str) -> None:
        tags = self.by_status.get((status, variant))
        if tags is None:
            tags = self.by_status[(status, variant)] = {**self.tags, "variant": variant, "status": str(status)}
        self._count(REQUESTS, tags, 1)


@serve.deployment(max_ongoing_requests=1000, health_check_period_s=HEALTH_CHECK_PERIOD_S)
class PipelineRouter:
    """Ingress deployment of one pipeline application (HTTP and Python handle callers)."""

    def __init__(
        self,
        workspace: str,
        pipeline: str,
        chains: dict[str, list[SegmentPlan]],
        limits: dict[str, Any],
        fetch_artifact: FetchArtifact,
        inline_threads: int = 2,
    ) -> None:
        bounds = RouterLimits.model_validate(limits)
        # The event loop (HTTP, admission, deadlines) shares the GIL with inline steps' worker threads.
        # A thread that waits for the GIL gets it only when the holder has run a switch interval
        # (5 ms by default), and the loop gives it up at every socket call: with two threads in a
        # GIL-bound step it took seconds per loop turn, and 1 s deadlines were answered after 8 s
        # (tests/integration/test_overload.py). A short interval keeps the loop's turns short.
        sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
        self.workspace = workspace
        self.pipeline = pipeline
        self.fetch_artifact = fetch_artifact
        self.telemetry = _Telemetry(workspace, pipeline)
        # Few threads: inline steps are mostly GIL-bound, and more threads than cores only trade the
        # GIL back and forth (measured: 1 thread beat the default pool of 6 by 1.2x at c=16 here).
        self.executor = ThreadPoolExecutor(inline_threads, thread_name_prefix="corral-inline")
        # Inline model steps by "<variant>.<step>": their segment, spec and the model loaded now.
        self.inline_models: dict[str, tuple[InlineSegment, StepSpec]] = {}
        self.model_shas: dict[str, str] = {}
        self.plane = DataPlane(
            pipeline,
            {variant: [self._segment(variant, plan) for plan in plans] for variant, plans in chains.items()},
            log=self._log_inference,
            telemetry=self.telemetry,
        )
        self.plane.shadows.listeners.append(self._log_shadow)
        control = serve.get_deployment_handle(CONTROL_DEPLOYMENT, app_name=CONTROL_APP)

        async def verify(token_hash: str) -> None:
            try:
                await control.verify_access.remote(token_hash, workspace, pipeline)
            except Exception as exc:
                raise as_domain_error(exc) from exc

        self.edge = HttpEdge(
            self.plane,
            AuthCache(verify, limiter=FailureLimiter()),
            prefix=route_prefix(workspace, pipeline),
            max_payload_bytes=bounds.max_payload_bytes,
            count_request=self.telemetry.count_request,
            admission=Admission(
                max_queued_requests=bounds.max_queued_requests,
                max_queue_delay_s=bounds.max_queue_delay_s,
                default_timeout_s=bounds.request_timeout_s,
            ),
        )
        self.sink: DeploymentHandle = serve.get_deployment_handle(LOG_SINK_DEPLOYMENT, app_name=LOGS_APP)
        self.ledger = self._open_ledger(bounds.log_ledger_dir, app_name(workspace, pipeline))
        self.logs = LogBuffer(
            self._send_logs, on_drop=self._count_dropped_logs, build=_build_log_rows, ledger=self.ledger
        )
        # Validations are evaluated by the sink, a batch at a time (640 us per single-row request here):
        # rows are queued under "<kind>:<pipeline version>" so each batch goes with its version's rules.
        self.validations_of: dict[str, dict[str, str]] = {}

    def _open_ledger(self, directory: str | None, owner: str) -> LogLedger | None:
        """This replica's ledger of unsent log rows, after counting what dead replicas here lost."""
        if directory is None:
            return None
        lost = collect_lost(Path(directory), owner)
        if lost:
            metric(LOG_ROWS_LOST).inc(lost, dict(self.telemetry.tags))
        return LogLedger(Path(directory), owner)

    def _segment(self, variant: str, plan: SegmentPlan) -> Segment:
        if "own" in plan:
            # Up to one batch per step in flight, so every step of the chain has work under load.
            return CoalescingSegment(RemoteSegment(plan["own"]), max_in_flight=len(plan["own"]) + 1)
        specs = [StepSpec.model_validate(raw) for raw in plan["inline"]]
        steps: list[tuple[str, Step]] = [
            (spec.name, _Unloaded(spec.name) if spec.model is not None else load_step(spec)) for spec in specs
        ]
        segment = InlineSegment(steps, observe=self.telemetry.step_observer(variant), executor=self.executor)
        for spec in specs:
            if spec.model is not None:
                self.inline_models[f"{variant}.{spec.name}"] = (segment, spec)
        return segment

    async def reconfigure(self, raw: dict[str, Any]) -> None:
        """A new live config: traffic and version at once; inline models that changed are loaded and
        warmed beside the old ones first, then swapped in (requests in flight finish on the old one)."""
        config = RouterConfig.model_validate(raw)
        parse_rules(config.validations)  # a config with a broken validation fails here, not per request
        missing = sorted(set(self.inline_models) - set(config.models))
        if missing:
            raise ValueError(f"router config has no model for inline steps {missing}")
        changed = {
            key: sha
            for key, sha in config.models.items()
            if key in self.inline_models and self.model_shas.get(key) != sha
        }
        loaded = await asyncio.gather(*(asyncio.to_thread(self._load_model, k, sha) for k, sha in changed.items()))
        self.plane.apply(config)  # validates the traffic before anything is swapped
        for (key, sha), step in zip(changed.items(), loaded, strict=True):
            segment, spec = self.inline_models[key]
            segment.replace(spec.name, step)
            if key in self.model_shas:
                log.info("inline step %s swapped model %s -> %s", key, self.model_shas[key][:12], sha[:12])
            self.model_shas[key] = sha

    def _load_model(self, key: str, sha256: str) -> Step:
        return load_step(self.inline_models[key][1], self.fetch_artifact, sha256)

    # --- HTTP -----------------------------------------------------------------------------------
    async def __call__(self, request: Request) -> Response:
        # Straight from the ASGI scope: request.headers and request.url build objects per request.
        admission = self.edge.admission
        arrived_at = admission.arrival() if admission is not None else None  # before the body is read
        scope = request.scope
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        reply = self.edge.refuse_early(headers)
        if reply is None:
            body = await request.body()
            reply = await self.edge.handle(request.method, scope["path"], headers, body, arrived_at)
        status, reply_headers, payload = reply
        return Response(payload, status_code=status, headers=reply_headers)

    async def handle_http(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        """One HTTP request as plain parts (lower-case header names), so the control app can forward
        requests here through a handle while the HTTP proxy catches up with a new route."""
        return await self.edge.handle(method, path, headers, body)

    # --- logs -----------------------------------------------------------------------------------
    def _log_inference(self, record: InferenceRecord) -> None:
        key = f"{INFERENCES}:{record.version}"
        if key not in self.validations_of:
            self.validations_of[key] = self.plane.config.validations
        self.logs.add(key, record)

    def _log_shadow(self, outcome: ShadowOutcome) -> None:
        metric(SHADOW_CALLS).inc(1, {**self.telemetry.tags, "variant": outcome.variant, "outcome": outcome.kind})
        self.logs.add(SHADOWS, outcome)

    def _count_dropped_logs(self, rows: int) -> None:
        metric(LOG_ROWS_DROPPED).inc(rows, self.telemetry.tags)

    async def _send_logs(self, key: str, rows: pa.Table) -> None:
        kind = key.partition(":")[0]
        payload = table_to_ipc(rows)  # bytes: Serve's pickling of a table costs far more (profiled)
        await self.sink.append.remote(kind, self.workspace, self.pipeline, payload, self.validations_of.get(key, {}))

    async def __del__(self) -> None:
        """Serve calls this on graceful shutdown (undeploy, `corral down`): nothing logged is lost."""
        await self.plane.shadows.drain(timeout_s=5.0)
        sent = await self.logs.flush()
        self.telemetry.flush()
        if sent and self.ledger is not None:
            self.ledger.close()

    # --- Python callers holding a handle ----------------------------------------------------------
    async def infer(self, data: Any, split_key: str | None = None) -> Any:
        """Run the pipeline on a pyarrow.Table, pandas.DataFrame or dict of columns; same type back."""
        if isinstance(data, pa.Table):
            table = data
        elif isinstance(data, dict):
            table = pa.table(data)
        elif type(data).__name__ == "DataFrame":  # pandas is imported only for callers that use it
            table = pa.Table.from_pandas(data, preserve_index=False)
        else:
            raise InvalidInput(
                f"infer() takes a pyarrow.Table, pandas.DataFrame or dict of columns, not {type(data).__name__}"
            )
        result = await self.plane.infer(table, self.plane.split_key(table, split_key))
        outputs = as_table(result.outputs)
        if isinstance(data, dict):
            return outputs.to_pydict()
        if not isinstance(data, pa.Table):
            return outputs.to_pandas()
        return outputs

    async def predict(self, table: pa.Table, variant: str) -> pa.Table:
        """Run one variant's chain on a table, unlogged and not mirrored to shadows (explainers)."""
        return await self.plane.predict(table, variant)

    def record_autoscaling_stats(self) -> dict[str, float]:
        """Serve asks every few seconds: this replica's backlog (deployments.autoscaling scales on it)."""
        admission = self.edge.admission
        return {BACKLOG_METRIC: admission.backlog() if admission else 0.0}

    async def info(self) -> dict[str, Any]:
        """What this replica serves: version, traffic, inline models (for tests and operators)."""
        config = self.plane.config
        return {
            "version": config.version,
            "traffic": config.traffic.model_dump(),
            "metadata": config.metadata,
            "config_id": config.config_id,
            "inline_models": dict(self.model_shas),
            "replica": serve.get_replica_context().replica_id.unique_id,
            "shadows": self.plane.shadows.stats(),
            "logs": self.logs.stats(),
            "admission": self.edge.admission.stats() if self.edge.admission else {},
        }


def _build_log_rows(kind: str, items: list[Any]) -> list[pa.Table]:
    """Log tables from what requests queued: inference records, shadow outcomes (or tables)."""
    if kind.startswith(INFERENCES):
        return inference_table(items)
    now = datetime.now(UTC)
    tables = [
        shadow_rows(time=now, request_id=o.request_id, variant=o.variant, rows=o.rows, output=o.output, error=o.error)
        for o in items
    ]
    return concat_tables(kind, tables)
