"""The control application `corral-control` at route `/`: REST API plus token checks for routers."""

from __future__ import annotations

from typing import Any, cast

from ray import serve
from ray.serve.deployment import Deployment

from cluster.api import build_api
from cluster.service import ControlService
from cluster.settings import CorralSettings
from deployments.health import HEALTH_CHECK_PERIOD_S
from deployments.names import CONTROL_DEPLOYMENT

api = build_api()


@serve.deployment(
    name=CONTROL_DEPLOYMENT,
    ray_actor_options={"num_cpus": 0.25},
    max_ongoing_requests=200,
    health_check_period_s=HEALTH_CHECK_PERIOD_S,
)
@serve.ingress(api)
class CorralControl:
    def __init__(self, settings: dict[str, Any], admin_token_hash: str | None) -> None:
        self.service = ControlService(CorralSettings.model_validate(settings), admin_token_hash)

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


def control_application(settings: CorralSettings, admin_token_hash: str | None) -> Any:
    return cast(Deployment, CorralControl).bind(settings.model_dump(mode="json"), admin_token_hash)
