"""The routers' Serve autoscaling policy: Serve's ongoing-request rule, or CPU use when that says more.

Serve runs it in its controller (pickled by value with this module), so it imports only Ray and
the pure `serving.load`.
"""

from __future__ import annotations

from typing import Any

from ray.serve.config import AutoscalingContext

from serving.load import BUSY_METRIC, desired_replicas

POLICY_PATH = "deployments.autoscaling:RouterAutoscalingPolicy"
# CPU seconds per second of one router replica above which it wants company: its event loop and
# inline threads share one GIL, so a replica tops out near one core.
BUSY_TARGET = 0.7


class RouterAutoscalingPolicy:
    """Called by Serve every control-loop tick with the deployment's metrics; returns the replicas
    wanted (Serve then applies min/max, the scaling factors and the up/down delays)."""

    def __init__(self, busy_target: float = BUSY_TARGET) -> None:
        self.busy_target = busy_target

    def __call__(self, ctx: AutoscalingContext) -> tuple[float, dict[str, Any]]:
        busy = (ctx.aggregated_metrics or {}).get(BUSY_METRIC, {})
        target_ongoing = ctx.config.get_target_ongoing_requests() if ctx.config is not None else 1.0
        wanted = desired_replicas(
            ctx.current_num_replicas,
            ctx.total_num_requests,
            target_ongoing,
            busy.values(),
            self.busy_target,
        )
        return (wanted if ctx.current_num_replicas else ctx.target_num_replicas), {}
