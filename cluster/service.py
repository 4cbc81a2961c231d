"""The control service: registry + deployer behind the REST API, one per control replica."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pydantic import ValidationError
from ray import serve

from cluster.assays import AssayService
from cluster.auth import Principal, Role
from cluster.batch import BatchService
from cluster.code_packages import CodeLimits
from cluster.deployer import Deployer, cluster_totals
from cluster.explanations import ExplainService
from cluster.registry import Registry, spec_errors
from cluster.settings import CorralSettings
from cluster.store.artifacts import ArtifactStore
from cluster.store.db import Database
from cluster.store.tables import Pipeline, PipelineVersion
from deployments.names import app_name
from monitoring.assay_spec import AssaySpec
from monitoring.assays import WindowResult
from monitoring.log_store import LogStore
from monitoring.metrics import ASSAY_ALERTS, ASSAY_SCORE, ASSAY_STATUS, STATUS_CODES
from monitoring.time_range import time_range
from pipelines.batch import BatchRequest
from pipelines.errors import Conflict, CorralError, InvalidInput, NotFound
from pipelines.placement import shortfall
from pipelines.spec import PipelineSpec, TrafficSpec
from serving.auth import FailureLimiter

log = logging.getLogger("corral.control")
MAX_LOG_ROWS = 1_000_000
RESTORE_PARALLELISM = 4  # pipelines deployed at once by `corral up`
PENDING_RECHECK_S = 5.0  # how often an unplaceable pipeline is checked against the cluster again
PENDING_RETRY_AFTER_S = 10
class ControlService:
    """Owns the store; deploys, undeploys and restores pipeline applications."""

    def __init__(self, settings: CorralSettings, admin_token_hash: str | None = None) -> None:
        self.settings = settings
        settings.home.mkdir(parents=True, exist_ok=True)
        limits = CodeLimits(max_files=settings.max_code_files, max_unpacked_bytes=settings.max_code_unpacked_bytes)
        self.registry = Registry(Database(settings.db_url), ArtifactStore(settings.artifacts_uri), limits)
        if admin_token_hash:
            self.registry.ensure_admin(admin_token_hash)
        self.deployer = Deployer(settings, self.registry)
        self.auth_failures = FailureLimiter()
        self.logs = LogStore(settings.logs_uri)
        self.assays = AssayService(self.registry, self.logs, self._known_columns, _assay_gauges)
        self.explanations = ExplainService(settings, self.registry, self.logs, self._deployed)
        self.batches = BatchService()
        self._pending_task: asyncio.Task[None] | None = None
        self._restore_task: asyncio.Task[list[dict[str, Any]]] | None = None

    def _known_columns(self, workspace: str, name: str) -> set[str]:
        """The log columns a pipeline's latest version is known to produce (from its spec and models)."""
        from cluster.metadata import log_columns, pipeline_metadata

        latest = self.registry.version_row(workspace, name, None)
        spec = PipelineSpec.model_validate(latest.spec)
        signatures = self.registry.model_signatures(latest.resolved)
        return log_columns(pipeline_metadata(name, latest.version, spec, signatures))

    def query_logs(
        self, who: Principal, workspace: str, name: str, start: str | None, end: str | None, limit: int
    ) -> Any:
        """The newest `limit` log rows of a pipeline in [start, end) (default: the last day), oldest first."""
        self.registry.get_pipeline_version(who, workspace, name)  # 404 unless visible
        if not 1 <= limit <= MAX_LOG_ROWS:
            raise InvalidInput(f"limit={limit} is out of range: ask for 1 to {MAX_LOG_ROWS:,} rows")
        since, until = time_range(start, end)
        return self.logs.query(workspace, name, since, until, limit)

    async def deploy(
        self, who: Principal, workspace: str, name: str, version: int | None, timeout_s: float | None = None
    ) -> dict[str, Any]:
        who.require(workspace, Role.editor)
        pv = await asyncio.to_thread(self.registry.get_pipeline_version, who, workspace, name, version)
        return await self.deployer.deploy(workspace, name, pv, timeout_s=timeout_s)

    async def set_traffic(self, who: Principal, workspace: str, name: str, raw: Any) -> dict[str, Any]:
        """Change the live split and shadows of a deployed pipeline: its routers reconfigure in place."""
        who.require(workspace, Role.editor)
        pv, _ = await asyncio.to_thread(self._deployed, who, workspace, name)
        spec = PipelineSpec.model_validate(pv.spec)
        try:
            traffic = TrafficSpec.model_validate(raw).for_variants(list(spec.variants))
        except (ValidationError, ValueError) as exc:
            detail = spec_errors(exc) if isinstance(exc, ValidationError) else str(exc)
            raise InvalidInput(
                f'invalid traffic: {detail}. Send {{"weights": {{variant: number}}, "key": column or null, '
                f'"shadows": [variant]}} naming variants of version {pv.version}: {sorted(spec.variants)}'
            ) from None
        return await self.deployer.deploy(workspace, name, pv, traffic)

    async def swap_model(
        self, who: Principal, workspace: str, name: str, variant: str, step: str, model_ref: str
    ) -> dict[str, Any]:
        """Hot-swap the model of one step: a new pipeline version that differs only in that model,
        applied to the running replicas in place, with the live traffic kept."""
        who.require(workspace, Role.editor)
        pv, live = await asyncio.to_thread(self._deployed, who, workspace, name)
        new_pv = await asyncio.to_thread(self.registry.swap_model, who, workspace, name, pv, variant, step, model_ref)
        result = await self.deployer.deploy(workspace, name, new_pv, live)
        return {**result, "variant": variant, "step": step, "model": new_pv.resolved[f"{variant}.{step}"]["model"]}

    def _deployed(self, who: Principal, workspace: str, name: str) -> tuple[PipelineVersion, TrafficSpec | None]:
        """The deployed version of a pipeline and its live traffic; 404 unknown, 409 not deployed."""
        self.registry.get_pipeline_version(who, workspace, name)
        state = self.registry.pipeline_state(workspace, name)
        if state is None or not state.deployed or state.deployed_version is None:
            raise Conflict(f"pipeline {name!r} is not deployed: deploy it first (corral pipelines deploy {name})")
        live = TrafficSpec.model_validate(state.traffic) if state.traffic else None
        return self.registry.version_row(workspace, name, state.deployed_version), live

    def start_batch(self, who: Principal, workspace: str, name: str, raw: Any) -> dict[str, Any]:
        """Start a batch run of a pipeline version over files; returns its first report (state running).
        Editors only: a run reads and writes files where the cluster's nodes can."""
        from cluster.app_builder import batch_plan
        from cluster.explanations import primary_variant

        who.require(workspace, Role.editor)
        try:
            request = BatchRequest.model_validate(raw)
        except ValidationError as exc:
            raise InvalidInput(
                f"invalid batch request: {spec_errors(exc)}. "
                'Send {"inputs": [paths or URIs], "output": directory}'
            ) from None
        if request.version is None:
            pv, live = self._deployed(who, workspace, name)
        else:
            pv, live = self.registry.get_pipeline_version(who, workspace, name, request.version), None
        spec = PipelineSpec.model_validate(pv.spec)
        variant = request.variant or primary_variant((live or spec.traffic).for_variants(list(spec.variants)))
        if variant not in spec.variants:
            raise InvalidInput(
                f"variant {variant!r} is not in version {pv.version}: use one of {sorted(spec.variants)}"
            )
        plan = batch_plan(
            workspace=workspace,
            pipeline=name,
            version=pv.version,
            variant=variant,
            spec=spec,
            resolved=pv.resolved,
            storage_uri=self.settings.artifacts_uri,
            logs_uri=self.settings.logs_uri,
            code_dir=self.settings.home / "code",
            code_sources=self.registry.code_sources,
        )
        job_id = self.batches.start(plan, request)
        return {"id": job_id, "pipeline": name, "version": pv.version, "variant": variant, "state": "running"}

    async def batch_progress(self, who: Principal, workspace: str, job_id: str) -> dict[str, Any]:
        """A batch run's report: state, rows (done, and in all when the inputs tell), files, seconds, rows/s."""
        await asyncio.to_thread(self.registry.check_workspace, who, workspace, Role.viewer)
        report = await self.batches.progress(workspace, job_id)
        if report is None:
            raise NotFound(
                f"batch run {job_id!r} not found in workspace {workspace!r} (runs are kept until the control app "
                "restarts): start one with `corral batch`"
            )
        return report

    def describe_pipeline(self, who: Principal, workspace: str, name: str) -> dict[str, Any]:
        latest = self.registry.get_pipeline_version(who, workspace, name)
        state = self.registry.pipeline_state(workspace, name)
        deployed = bool(state and state.deployed)
        version = state.deployed_version if deployed and state and state.deployed_version else latest.version
        row = latest if version == latest.version else self.registry.version_row(workspace, name, version)
        status = self.deployer.status(workspace, name, deployed)
        return {
            "name": name,
            "version": version,
            "latest_version": latest.version,
            "spec": row.spec,
            "status": status,
            **({"reason": self.deployer.pending[app_name(workspace, name)]} if status == "pending" else {}),
            "traffic": (state.traffic if deployed and state and state.traffic else row.spec.get("traffic")),
        }

    async def forward(
        self, workspace: str, name: str, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes] | None:
        """Hand a request to the pipeline's router through a handle; None when it is not running."""
        if await asyncio.to_thread(self.deployer.status, workspace, name, True) != "running":
            return None
        handle = await asyncio.to_thread(serve.get_app_handle, app_name(workspace, name))
        try:
            result: tuple[int, dict[str, str], bytes] = await handle.handle_http.remote(method, path, headers, body)
        except Exception as exc:
            log.warning("forwarding to %s/%s failed: %s", workspace, name, exc)
            return None
        return result

    async def restore(self, only_missing: bool = False) -> list[dict[str, Any]]:
        """Deploy again every pipeline the store marks as deployed, with its stored traffic, a few at
        a time. One the cluster cannot place (a GPU step without a GPU node) is not waited for: it is
        reported `pending` with the reason, its endpoints answer 503, and it starts once it fits.

        `only_missing` leaves alone the pipelines Serve already has an application for: a second
        `serve.run` of an unchanged pipeline would still replace its replicas (new random version)."""
        states = await asyncio.to_thread(self.registry.deployed_pipelines)
        if only_missing:
            existing = set(await asyncio.to_thread(lambda: serve.status().applications))
            states = missing_pipelines(states, existing)
        totals = await asyncio.to_thread(cluster_totals)
        gate = asyncio.Semaphore(RESTORE_PARALLELISM)

        async def one(state: Pipeline) -> dict[str, Any]:
            async with gate:
                return await self._restore_one(state, totals)

        results = list(await asyncio.gather(*(one(state) for state in states)))
        self._watch_pending()
        return results

    async def restore_on_start(self, wait_s: float) -> None:
        """Restore the pipelines missing from Serve, waiting up to `wait_s` (the rest goes on in the
        background). For a control app deployed from a Serve config (KubeRay), where no `corral up`
        asks for the restore: this runs on every start of the control replica, so a new cluster (an
        upgrade), a restarted head or a replaced control replica all get the store's pipelines back."""
        self._restore_task = asyncio.get_running_loop().create_task(self.restore(only_missing=True))
        try:
            rows = await asyncio.wait_for(asyncio.shield(self._restore_task), wait_s)
        except TimeoutError:
            log.warning("still restoring pipelines after %.0f s; going on in the background", wait_s)
            return
        except Exception:
            log.exception("restoring deployed pipelines failed; deploy them again with `corral pipelines deploy`")
            return
        for row in rows:
            log.info("restored %s/%s: %s", row["workspace"], row["name"], row["status"])

    async def _restore_one(self, state: Pipeline, totals: dict[str, float]) -> dict[str, Any]:
        assert state.deployed_version is not None
        row: dict[str, Any] = {"workspace": state.workspace, "name": state.name, "version": state.deployed_version}
        try:
            pv, reason = await self._placement(state, totals)
            if reason is not None:
                await self._pend(app_name(state.workspace, state.name), pv, reason)
                log.warning("%s/%s is pending: %s", state.workspace, state.name, reason)
                return {**row, "status": "pending", "reason": reason}
            traffic = TrafficSpec.model_validate(state.traffic) if state.traffic else None
            await self.deployer.deploy(state.workspace, state.name, pv, traffic)
            return {**row, "status": "running"}
        except CorralError as exc:
            log.error("could not restore %s/%s: %s", state.workspace, state.name, exc.message)
            return {**row, "status": "failed", "error": exc.message}

    async def _pend(self, app: str, pv: PipelineVersion, reason: str) -> None:
        """Mark an unplaceable pipeline pending, its demand shown to Ray's autoscaler (cluster.demand)."""
        await self.deployer.set_pending(app, reason, PipelineSpec.model_validate(pv.spec))

    async def _placement(self, state: Pipeline, totals: dict[str, float]) -> tuple[PipelineVersion, str | None]:
        """A deployed pipeline's version and why the cluster (`totals`) cannot place it, or None."""
        assert state.deployed_version is not None
        pv = await asyncio.to_thread(self.registry.version_row, state.workspace, state.name, state.deployed_version)
        return pv, shortfall(PipelineSpec.model_validate(pv.spec), totals)

    async def pending_reason(self, workspace: str, name: str) -> str | None:
        """Why a deployed pipeline is not running, if the cluster cannot place it; else None.

        Also finds pipelines left unplaced before this control replica started (it keeps `pending`
        in memory only) and hands them to the watcher, so they still start once they fit.
        """
        app = app_name(workspace, name)
        if app in self.deployer.pending:
            return self.deployer.pending[app]
        if await asyncio.to_thread(self.deployer.status, workspace, name, True) != "not running":
            return None
        state = await asyncio.to_thread(self.registry.pipeline_state, workspace, name)
        if state is None or not state.deployed or state.deployed_version is None:
            return None
        pv, reason = await self._placement(state, await asyncio.to_thread(cluster_totals))
        if reason is not None:
            await self._pend(app, pv, reason)
            self._watch_pending()
        return reason

    def _watch_pending(self) -> None:
        if self.deployer.pending and (self._pending_task is None or self._pending_task.done()):
            self._pending_task = asyncio.get_running_loop().create_task(self._start_pending())

    async def _start_pending(self) -> None:
        """Every few seconds: deploy each pending pipeline that the cluster can now place."""
        while self.deployer.pending:
            await asyncio.sleep(PENDING_RECHECK_S)
            totals = await asyncio.to_thread(cluster_totals)
            for app in list(self.deployer.pending):
                try:
                    await self._start_if_fits(app, totals)
                except Exception:  # keep watching the others; the next round tries this one again
                    log.exception("checking pending %s failed", app)

    async def _start_if_fits(self, app: str, totals: dict[str, float]) -> None:
        state = await asyncio.to_thread(self._deployed_state_of, app)
        if state is None or state.deployed_version is None:  # undeployed (or deleted) meanwhile
            await self.deployer.clear_pending(app)
            return
        pv, reason = await self._placement(state, totals)
        if reason is not None:
            await self._pend(app, pv, reason)
            return
        log.info("%s fits the cluster now: deploying it", app)
        traffic = TrafficSpec.model_validate(state.traffic) if state.traffic else None
        try:
            await self.deployer.deploy(state.workspace, state.name, pv, traffic)
        except CorralError as exc:
            log.error("pending %s fits but did not start: %s", app, exc.message)
            # Not a resource it lacks: no demand to show (the deploy removed the placement group).
            await self.deployer.set_pending(app, f"it fits the cluster but did not start: {exc.message}", None)

    def _deployed_state_of(self, app: str) -> Pipeline | None:
        for state in self.registry.deployed_pipelines():
            if app_name(state.workspace, state.name) == app:
                return state
        return None


def missing_pipelines(states: list[Pipeline], existing_apps: set[str]) -> list[Pipeline]:
    """The deployed pipelines that have no Serve application (of any status) yet."""
    return [state for state in states if app_name(state.workspace, state.name) not in existing_apps]


def _assay_gauges(workspace: str, name: str, spec: AssaySpec, result: WindowResult) -> None:
    from deployments.metrics import metric

    if result.score is None:
        return  # a window without traffic says nothing: the gauges keep the last judged window
    tags = {"workspace": workspace, "assay": name, "pipeline": spec.pipeline}
    metric(ASSAY_SCORE).set(float(result.score), dict(tags))  # Serve adds its own labels to the dict
    metric(ASSAY_STATUS).set(float(STATUS_CODES[result.status]), dict(tags))
    if result.status == "alert":
        metric(ASSAY_ALERTS).inc(1.0, dict(tags))

