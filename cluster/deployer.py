"""Deploys pipeline versions as Serve applications and confirms them by polling, never by blocking."""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from typing import Any

import httpx
from ray import serve

from cluster.app_builder import build_app, inline_models, router_config
from cluster.demand import PendingDemand
from cluster.registry import Registry
from cluster.settings import MAX_DEPLOY_TIMEOUT_S, CorralSettings
from cluster.store.tables import PipelineVersion
from deployments.names import app_name, route_prefix
from deployments.ray_private import autoscaler
from pipelines.errors import BadPayload, InvalidInput, NotReady
from pipelines.placement import Autoscaler, refusal, shortfall, startup_bundles
from pipelines.spec import PipelineSpec, TrafficSpec
from serving.http import PROBE_HEADER

log = logging.getLogger("corral.deployer")
POLL_S = 0.25
UNPLACEABLE_RETRY_AFTER_S = 10


class Deployer:
    """serve.run / serve.delete of pipeline applications, one change at a time per pipeline."""

    def __init__(self, settings: CorralSettings, registry: Registry) -> None:
        self.settings = settings
        self.registry = registry
        self.probe = secrets.token_urlsafe(24)
        self.locks: dict[str, asyncio.Lock] = {}
        self.deploying: set[str] = set()
        # Deployed in the store but unplaceable on this cluster (app name -> why); see ControlService.restore.
        self.pending: dict[str, str] = {}
        self.demand = PendingDemand()
        host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
        self.local_url = f"http://{host}:{settings.port}"

    def lock(self, app: str) -> asyncio.Lock:
        return self.locks.setdefault(app, asyncio.Lock())

    async def deploy(
        self,
        workspace: str,
        name: str,
        pv: PipelineVersion,
        traffic: TrafficSpec | None = None,
        timeout_s: float | None = None,
    ) -> dict[str, Any]:
        """Deploy `pv` (new, upgrade or rollback) and return once it answers HTTP; on failure, or when
        it does not within `timeout_s` (default CORRAL_DEPLOY_TIMEOUT_S), restore the old one."""
        app = app_name(workspace, name)
        budget_s = timeout_s or self.settings.deploy_timeout_s
        if budget_s > MAX_DEPLOY_TIMEOUT_S:
            raise BadPayload(
                f"a deploy waits at most {MAX_DEPLOY_TIMEOUT_S:g} s (X-Corral-Timeout-Ms: "
                f"{MAX_DEPLOY_TIMEOUT_S * 1000:.0f}): the proxy drops a connection held longer; send a shorter "
                "deadline, and deploy again if it runs out"
            )
        async with self.lock(app):
            spec = PipelineSpec.model_validate(pv.spec)
            traffic = traffic or spec.traffic
            await self._refuse_unplaceable(name, spec)  # before anything changes: the old version keeps serving
            previous = await asyncio.to_thread(self.registry.pipeline_state, workspace, name)
            self.deploying.add(app)
            await self.clear_pending(app)
            try:
                await self._run(workspace, name, pv, spec, traffic, budget_s)
            except Exception:
                await self._recover(workspace, name, previous)
                raise
            finally:
                self.deploying.discard(app)
            await asyncio.to_thread(self.registry.mark_deployed, workspace, name, pv.version, traffic)
            return {"name": name, "version": pv.version, "status": "running", "traffic": traffic.model_dump()}

    async def _refuse_unplaceable(self, name: str, spec: PipelineSpec) -> None:
        """A 503 at once for a pipeline that does not fit the cluster when nothing can add a node
        that it would fit; with an autoscaler that may, the deploy waits for it (see _wait_live)."""
        totals = await asyncio.to_thread(cluster_totals)
        if shortfall(spec, totals) is None:
            return
        reason = refusal(spec, totals, await asyncio.to_thread(_autoscaler_or_unknown))
        if reason is not None:
            raise NotReady(
                f"pipeline {name!r} cannot start: it {reason}. Add a node with those resources (`ray start "
                "--address=HEAD:6379` with them, or a node type the autoscaler can add) and deploy again, "
                "or deploy a version that asks for less",
                UNPLACEABLE_RETRY_AFTER_S,
            )

    async def set_pending(self, app: str, reason: str, spec: PipelineSpec | None) -> None:
        """Mark a deployed pipeline pending; with its `spec`, ask Ray's autoscaler for what it needs."""
        self.pending[app] = reason
        if spec is not None:
            await asyncio.to_thread(self.demand.ask, app, startup_bundles(spec))

    async def clear_pending(self, app: str) -> None:
        """Not pending any more: it deploys (the demand's reservation would hold its resources) or goes."""
        self.pending.pop(app, None)
        if app in self.demand.groups:
            await asyncio.to_thread(self.demand.drop, app)

    async def _run(
        self,
        workspace: str,
        name: str,
        pv: PipelineVersion,
        spec: PipelineSpec,
        traffic: TrafficSpec,
        timeout_s: float,
    ) -> None:
        app = app_name(workspace, name)
        metadata = await asyncio.to_thread(self._metadata, workspace, name, pv, spec)
        models = inline_models(spec, pv.resolved)
        user_config = router_config(pv.version, traffic, self.probe, metadata, spec.validations, models)
        application = build_app(
            workspace=workspace,
            pipeline=name,
            spec=spec,
            resolved=pv.resolved,
            router_user_config=user_config,
            storage_uri=self.settings.artifacts_uri,
            code_dir=self.settings.home / "code",
            code_sources=self.registry.code_sources,
            max_payload_bytes=self.settings.max_payload_bytes,
            inline_threads=self.settings.inline_threads,
            request_timeout_s=self.settings.request_timeout_s,
            log_ledger_dir=str(self.settings.home / "log-ledgers"),
        )
        # Not serve.run: even with blocking=False it waits, without a bound, for the app to run; a
        # pipeline the cluster cannot place held its deploy call past 90 s (seen). _wait_live bounds it.
        target = serve.RunTarget(application, name=app, route_prefix=route_prefix(workspace, name))
        await asyncio.to_thread(serve.run_many, [target], wait_for_applications_running=False)
        log.info("%s submitted; waiting for config %s", app, user_config["config_id"])
        await self._wait_live(workspace, name, spec, user_config["config_id"], timeout_s)
        log.info("%s serves config %s", app, user_config["config_id"])

    async def _wait_live(self, workspace: str, name: str, spec: PipelineSpec, config_id: str, timeout_s: float) -> None:
        """Done when the route answers with this exact router config and every deployment is healthy.

        Serve's `last_deployed_time_s` does not move for an in-place (user_config) update, and its
        status can still read RUNNING just after serve.run; the config id the router echoes is the
        proof that this update reached it, and HEALTHY deployments that the steps caught up too.

        Only DEPLOY_FAILED fails the change: Serve says UNHEALTHY when a running replica died (no
        Corral replica fails a health check otherwise) and clears it once the replacement runs, so
        a swap or traffic change made just after a crash waits for the replacement.
        """
        app = app_name(workspace, name)
        url = f"{self.local_url}{route_prefix(workspace, name)}/ready"
        deadline = time.monotonic() + timeout_s
        routed = False
        status: dict[str, Any] | None = None
        async with httpx.AsyncClient(timeout=5) as client:
            while time.monotonic() < deadline:
                status = await asyncio.to_thread(app_status, app)
                if status is not None and status["status"] == "DEPLOY_FAILED":
                    raise InvalidInput(start_failure(status))
                if not routed:
                    routed = await _answers(client, url, self.probe, config_id)
                elif status is not None and status["status"] == "RUNNING" and all(
                    d.startswith("HEALTHY") for d in status["deployments"].values()
                ):
                    return
                await asyncio.sleep(POLL_S)
        reason = shortfall(spec, await asyncio.to_thread(cluster_totals))
        if reason is not None:
            raise NotReady(
                f"pipeline {name!r} did not start within {timeout_s:g} s: it {reason}. Add a node with those "
                "resources (or let the autoscaler add one and deploy again), or deploy a version that asks for less",
                UNPLACEABLE_RETRY_AFTER_S,
            )
        what = "does not answer on its route" if not routed else "did not become healthy"
        last = f" (Serve: {status['status']}: {status['message']})" if status is not None and status["message"] else ""
        raise NotReady(f"pipeline {app} {what} within {timeout_s:g} s{last}"[:3000], 10)

    async def _recover(self, workspace: str, name: str, previous: Any) -> None:
        """After a failed deploy: put the version that was running back, or remove the broken app."""
        app = app_name(workspace, name)
        if previous is not None and previous.deployed and previous.deployed_version is not None:
            log.warning("deploy of %s failed; restoring version %s", app, previous.deployed_version)
            pv = await asyncio.to_thread(self.registry.version_row, workspace, name, previous.deployed_version)
            try:
                traffic = TrafficSpec.model_validate(previous.traffic) if previous.traffic else None
                spec = PipelineSpec.model_validate(pv.spec)
                await self._run(workspace, name, pv, spec, traffic or spec.traffic, self.settings.deploy_timeout_s)
            except Exception:
                log.exception("could not restore %s version %s", app, previous.deployed_version)
        else:
            await asyncio.to_thread(serve.delete, app)

    async def undeploy(self, workspace: str, name: str) -> None:
        app = app_name(workspace, name)
        async with self.lock(app):
            await self.clear_pending(app)
            await asyncio.to_thread(serve.delete, app)
            await asyncio.to_thread(self.registry.mark_undeployed, workspace, name)

    def _metadata(self, workspace: str, name: str, pv: PipelineVersion, spec: PipelineSpec) -> dict[str, Any]:
        from cluster.metadata import pipeline_metadata

        return pipeline_metadata(name, pv.version, spec, self.registry.model_signatures(pv.resolved))

    def status(self, workspace: str, name: str, deployed: bool) -> str:
        app = app_name(workspace, name)
        if app in self.deploying:
            return "deploying"
        if not deployed:
            return "undeployed"
        if app in self.pending:
            return "pending"
        status = app_status(app)
        if status is None:
            return "not running"
        return {"RUNNING": "running", "DEPLOYING": "deploying"}.get(status["status"], status["status"].lower())


# The last line of a replica's traceback when its constructor raised one of Corral's own errors.
_DOMAIN_ERROR_LINE = re.compile(r"^\s*pipelines\.errors\.\w+: (.+)$", re.MULTILINE)


def start_failure(status: dict[str, Any]) -> str:
    """What to tell the user about a DEPLOY_FAILED app: the step's own error when a replica's
    constructor raised one (see pipelines.loading), else Serve's messages."""
    detail = "; ".join(f"{k}: {v}" for k, v in status["deployments"].items())
    found = _DOMAIN_ERROR_LINE.findall(f"{status['message']}\n{detail}")
    if found:
        return str(found[-1])
    return f"pipeline failed to start: {status['message']} {detail}"[:3000]


def app_status(app: str) -> dict[str, Any] | None:
    overview = serve.status().applications.get(app)
    if overview is None:
        return None
    return {
        "status": str(getattr(overview.status, "value", overview.status)),
        "message": overview.message or "",
        "last_deployed": overview.last_deployed_time_s or 0.0,
        "deployments": {
            name: str(getattr(d.status, "value", d.status)) + (f": {d.message}" if d.message else "")
            for name, d in overview.deployments.items()
        },
    }


async def _answers(client: httpx.AsyncClient, url: str, probe: str, config_id: str) -> bool:
    try:
        reply = await client.get(url, headers={PROBE_HEADER: probe})
        return reply.status_code == 200 and reply.json().get("config_id") == config_id
    except (httpx.HTTPError, ValueError):
        return False


def cluster_totals() -> dict[str, float]:
    """The Ray cluster's resource totals (all nodes alive now)."""
    import ray

    return {key: float(value) for key, value in ray.cluster_resources().items()}


def _autoscaler_or_unknown() -> Autoscaler | None:
    """What can add nodes (see deployments.ray_private.autoscaler); when Ray will not say, an
    autoscaler of unknown reach, so that a deploy waits for its deadline rather than being refused."""
    try:
        return autoscaler()
    except Exception:
        log.warning("could not tell whether an autoscaler runs; a deploy that does not fit waits", exc_info=True)
        return Autoscaler()
