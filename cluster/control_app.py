"""The control application `corral-control` at route `/`: REST API plus token checks for routers."""

from __future__ import annotations

from typing import Any, cast

from fastapi import FastAPI
from ray import serve
from ray.serve.deployment import Deployment

from cluster.api import build_api
from cluster.service import ControlService
from cluster.settings import CorralSettings
from deployments.health import HEALTH_CHECK_PERIOD_S
from deployments.names import CONTROL_DEPLOYMENT


@serve.deployment(
    name=CONTROL_DEPLOYMENT,
    ray_actor_options={"num_cpus": 0.25},
    max_ongoing_requests=200,
    health_check_period_s=HEALTH_CHECK_PERIOD_S,
)
@serve.ingress()  # the app is built per replica, around its service: __serve_build_asgi_app__
class CorralControl:
    # Serve awaits an async constructor before the replica counts as started: with `restore_on_start`
    # the control app is RUNNING only once the stored pipelines are back (or the wait is over), so
    # KubeRay, which waits for every Serve app to run, moves traffic to a new cluster after that.
    async def __init__(  # type: ignore[misc]
        self, settings: dict[str, Any], admin_token_hash: str | None, restore_on_start: bool = False
    ) -> None:
        corral = CorralSettings.model_validate(settings)
        self.service = ControlService(corral, admin_token_hash)
        if restore_on_start:
            # Restores run a few at a time, each bounded by the deploy timeout: `corral up`'s bound.
            await self.service.restore_on_start(wait_s=corral.deploy_timeout_s * 2)

    def __serve_build_asgi_app__(self) -> FastAPI:
        return build_api(self.service)

    async def verify_access(self, token_hash: str, workspace: str, pipeline: str) -> str:
        """Called by routers (through a handle) on a token cache miss; raises the API's errors."""
        import asyncio

        role = await asyncio.to_thread(
            self.service.registry.verify_access, token_hash or None, workspace, pipeline
        )
        return role.name

    async def run_assays(self) -> int:
        """Called by the assay scheduler: compute every window that has ended; returns how many."""
        import asyncio

        return await asyncio.to_thread(self.service.assays.run_due)

    async def restore(self) -> list[dict[str, Any]]:
        return await self.service.restore()


def control_application(settings: CorralSettings, admin_token_hash: str | None, restore_on_start: bool = False) -> Any:
    """The bound control app; `restore_on_start` for deployments without `corral up` (which restores itself)."""
    return cast(Deployment, CorralControl).bind(settings.model_dump(mode="json"), admin_token_hash, restore_on_start)
