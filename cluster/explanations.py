"""Explanations on demand: validate, resolve the reference, start the pipeline's explainer, await it.

The explainer is its own Serve app per pipeline, created on the first request and scaled to zero
after `explainer_idle_s` without one; the next request brings a replica back (a cold start).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any, cast

import pyarrow as pa
from ray import serve
from ray.serve.deployment import Deployment
from ray.serve.handle import DeploymentHandle

from cluster.auth import Principal
from cluster.deployer import app_status
from cluster.registry import Registry
from cluster.settings import CorralSettings
from cluster.store.artifacts import ArtifactStore
from cluster.store.tables import PipelineVersion
from deployments.autoscaling import POLICY_PATH
from deployments.names import EXPLAINER_DEPLOYMENT, explainer_app_name, step_deployment_name
from explain.features import logged_feature_columns
from explain.request import DatasetReference, ExplainRequest, ValuesReference, WindowReference, parse_request
from monitoring.log_schema import IN
from monitoring.log_store import LogStore
from monitoring.time_range import time_range
from pipelines.errors import BudgetExceeded, CorralError, InvalidInput, NotReady
from pipelines.spec import PipelineSpec, TrafficSpec
from serving.errors import as_domain_error

log = logging.getLogger("corral.explain")
MAX_LOGGED_REFERENCE_ROWS = 10_000
EXPLAINER_DOWNSCALE_DELAY_S = 5.0
START_GRACE_S = 120.0  # a cold explainer replica imports alibi and connects before it can start
POLL_S = 0.25

Deployed = Callable[[Principal, str, str], tuple[PipelineVersion, TrafficSpec | None]]


class ExplainService:
    def __init__(self, settings: CorralSettings, registry: Registry, logs: LogStore, deployed: Deployed) -> None:
        self.settings = settings
        self.registry = registry
        self.logs = logs
        self.deployed = deployed
        self.locks: dict[str, asyncio.Lock] = {}
        # Explainer apps known to exist: serve.status() costs ~30 ms, too much to ask per explanation.
        self.started: set[str] = set()

    async def explain(self, who: Principal, workspace: str, name: str, raw: Any) -> dict[str, Any]:
        """`{"meta", "data"}` for a deployed pipeline; 4xx for bad requests, 503 past the time budget."""
        request = parse_request(raw)
        pv, live = await asyncio.to_thread(self.deployed, who, workspace, name)
        params = request.method_params()
        spec = PipelineSpec.model_validate(pv.spec)
        variant = params.variant or primary_variant((live or spec.traffic).for_variants(list(spec.variants)))
        if variant not in spec.variants:
            raise InvalidInput(
                f"params.variant {variant!r} is not in version {pv.version}: use one of {sorted(spec.variants)}"
            )
        reference, described = await asyncio.to_thread(self.reference, workspace, name, request)
        budget_s = params.timeout_s or self.settings.explain_timeout_s
        context = {
            "workspace": workspace,
            "pipeline": name,
            "version": pv.version,
            "variant": variant,
            "reference": described,
            "budget_s": budget_s,
        }
        handle = await self.explainer(workspace, name)
        job_id = uuid.uuid4().hex
        forwarded = {k: v for k, v in raw.items() if k != "reference"}  # resolved into `reference` already
        plan = {
            "steps": [step.model_dump(mode="json") for step in spec.variants[variant].steps],
            "models": {
                step.name: pv.resolved[step_deployment_name(variant, step.name)]["sha256"]
                for step in spec.variants[variant].steps
                if step.model is not None
            },
        }
        response = handle.explain.remote(job_id, forwarded, reference, context, plan)
        try:
            result: dict[str, Any] = await asyncio.wait_for(response, timeout=budget_s + START_GRACE_S)
        except TimeoutError:
            response.cancel()
            raise BudgetExceeded(
                f"no explanation within {budget_s:.0f} s (+{START_GRACE_S:.0f} s to start the explainer): "
                "raise params.timeout_s or ask for less work"
            ) from None
        except Exception as exc:
            error = as_domain_error(exc)
            if error is not exc and not isinstance(getattr(exc, "cause", None), CorralError):
                self.started.discard(explainer_app_name(workspace, name))  # look again next time
            raise error from exc
        return result

    def reference(self, workspace: str, name: str, request: ExplainRequest) -> tuple[pa.Table, dict[str, Any]]:
        """The reference rows and how `meta.reference` describes them."""
        ref = request.reference
        if isinstance(ref, ValuesReference):
            return _records(ref.values, "reference.values"), {"source": "values", "rows": len(ref.values)}
        if isinstance(ref, DatasetReference):
            table = self.registry.load_dataset(workspace, ref.dataset)
            return table, {"source": "dataset", "dataset": ref.dataset, "rows": table.num_rows}
        if ref is None and request.method == "permutation" and request.instances:
            table = _records(request.instances, "instances")
            return table, {"source": "instances", "rows": table.num_rows}
        start, end = (ref.start, ref.end) if isinstance(ref, WindowReference) else (None, None)
        since, until = time_range(start, end)
        logged = logged_inputs(self.logs.query(workspace, name, since, until, MAX_LOGGED_REFERENCE_ROWS))
        table, extra = logged_feature_columns(logged, request.instances)
        described: dict[str, Any] = {
            "source": "logs",
            "start": since.isoformat(),
            "end": until.isoformat(),
            "rows": table.num_rows,
        }
        if extra:
            described["columns_dropped"] = extra
        if table.num_rows == 0:
            raise InvalidInput(
                f"no logged inputs of {name!r} between {since.isoformat()} and {until.isoformat()} to use as the "
                'reference: send traffic first, widen reference {"start", "end"}, or pass {"values": [rows]} '
                'or {"dataset": "name"}'
            )
        return table, described

    async def explainer(self, workspace: str, name: str) -> DeploymentHandle:
        """The pipeline's explainer handle, creating its app the first time (it then scales on its own)."""
        app = explainer_app_name(workspace, name)
        async with self.locks.setdefault(app, asyncio.Lock()):
            if app not in self.started:
                if await asyncio.to_thread(_app_state, app) is None:
                    await asyncio.to_thread(self._start, workspace, name, app)
                    await self._wait_running(app)
                self.started.add(app)
        return serve.get_deployment_handle(EXPLAINER_DEPLOYMENT, app_name=app)

    def _start(self, workspace: str, name: str, app: str) -> None:
        from deployments.explainer import Explainer

        idle_s = self.settings.explainer_idle_s
        deployment = cast(Deployment, Explainer).options(
            name=EXPLAINER_DEPLOYMENT,
            autoscaling_config={
                "min_replicas": 0,
                "initial_replicas": 1,
                "max_replicas": 1,  # one replica: progress reports and the fitted-explainer cache live in it
                "target_ongoing_requests": 1,
                "upscale_delay_s": 0,
                # The replica reports itself busy until idle_s after its last request (Serve's own
                # sampled count misses short calls), so Serve's delays need not wait that long again.
                "downscale_delay_s": EXPLAINER_DOWNSCALE_DELAY_S,
                "downscale_to_zero_delay_s": EXPLAINER_DOWNSCALE_DELAY_S,
                "look_back_period_s": 15,  # must exceed Serve's metrics interval (10 s)
                "policy": {"policy_function": POLICY_PATH},
            },
        )
        log.info("starting the explainer of %s/%s (scales to zero after %.0f s idle)", workspace, name, idle_s)
        fetch = ArtifactStore(self.settings.artifacts_uri).get  # the explainer loads the steps' models itself
        serve.run(deployment.bind(workspace, name, fetch, idle_s), name=app, route_prefix=None, blocking=False)

    async def _wait_running(self, app: str) -> None:
        deadline = time.monotonic() + self.settings.deploy_timeout_s
        while time.monotonic() < deadline:
            state = await asyncio.to_thread(_app_state, app)
            if state == "RUNNING":
                return
            if state in ("DEPLOY_FAILED", "UNHEALTHY"):
                await asyncio.to_thread(serve.delete, app)
                raise NotReady(f"the explainer app {app} failed to start ({state}): see the Ray dashboard logs", 10)
            await asyncio.sleep(POLL_S)
        raise NotReady(f"the explainer app {app} did not start within {self.settings.deploy_timeout_s:.0f} s", 10)

    async def progress(self, who: Principal, workspace: str, name: str) -> list[dict[str, Any]]:
        """Running explanations of a pipeline; empty (without waking it) when its explainer is at zero."""
        await asyncio.to_thread(self.registry.get_pipeline_version, who, workspace, name)
        app = explainer_app_name(workspace, name)
        if await asyncio.to_thread(running_replicas, app) == 0:
            return []
        handle = serve.get_deployment_handle(EXPLAINER_DEPLOYMENT, app_name=app)
        reports: list[dict[str, Any]] = await handle.progress.remote()
        return reports

    async def remove(self, workspace: str, name: str) -> None:
        """Delete a pipeline's explainer app (on undeploy); nothing to do when it was never asked."""
        app = explainer_app_name(workspace, name)
        self.started.discard(app)
        if await asyncio.to_thread(_app_state, app) is not None:
            await asyncio.to_thread(serve.delete, app)


def primary_variant(traffic: TrafficSpec) -> str:
    """The variant taking the largest share of live traffic (the first such, on a tie)."""
    weights = traffic.weights or {}
    if not weights:
        raise InvalidInput("the pipeline has no weighted variant to explain: name one with params.variant")
    return max(weights, key=lambda v: weights[v])


def logged_inputs(rows: pa.Table) -> pa.Table:
    """The `in.<name>` columns of logged rows, renamed to the pipeline's input names."""
    names = [n for n in rows.column_names if n.startswith(IN)]
    return rows.select(names).rename_columns([n[len(IN) :] for n in names])


def _records(records: list[dict[str, Any]], what: str) -> pa.Table:
    try:
        return pa.Table.from_pylist(records)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as exc:
        raise InvalidInput(
            f"{what}: the rows do not form a table ({exc}): give every row the same columns and types"
        ) from None


def _app_state(app: str) -> str | None:
    status = app_status(app)
    return None if status is None else str(status["status"])


def running_replicas(app: str) -> int:
    overview = serve.status().applications.get(app)
    if overview is None or EXPLAINER_DEPLOYMENT not in overview.deployments:
        return 0
    states = overview.deployments[EXPLAINER_DEPLOYMENT].replica_states
    return sum(n for state, n in states.items() if str(state).endswith("RUNNING"))
