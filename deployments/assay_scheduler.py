"""The assay scheduler: one replica that asks the control app to run due assay windows, on a tick."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from ray import serve

from deployments.health import HEALTH_CHECK_PERIOD_S
from deployments.names import CONTROL_APP, CONTROL_DEPLOYMENT

log = logging.getLogger("corral.assays")


@serve.deployment(
    num_replicas=1,
    ray_actor_options={"num_cpus": 0.1},
    max_ongoing_requests=8,
    health_check_period_s=HEALTH_CHECK_PERIOD_S,
)
class AssayScheduler:
    """Every `tick_s`, runs the windows of active assays that have ended (paused ones are skipped).

    The control app owns the store, so the scheduler only keeps time; a failed tick is logged and
    the next one tries again, so a broken assay or webhook never stops the schedule.
    """

    def __init__(self, tick_s: float) -> None:
        self.tick_s = tick_s
        self.control = serve.get_deployment_handle(CONTROL_DEPLOYMENT, app_name=CONTROL_APP)
        self.ticks = 0
        self.windows = 0
        self.loop = asyncio.get_running_loop().create_task(self._run_forever())

    async def _run_forever(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            try:
                self.windows += await self.control.run_assays.remote()
            except Exception as exc:
                log.warning("assay tick failed (next in %.0f s): %s", self.tick_s, exc)
            self.ticks += 1

    async def stats(self) -> dict[str, int]:
        return {"ticks": self.ticks, "windows": self.windows}

    async def __del__(self) -> None:
        self.loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.loop
