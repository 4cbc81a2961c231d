"""Corral's Serve autoscaling policy, for routers and explainers: Serve's ongoing-request rule, with
each replica's own backlog estimate when that says more (serving.load).

Serve runs it in its controller (pickled by value with this module), so it imports only Ray and
the pure `serving.load`.
"""

from __future__ import annotations

from typing import Any

from ray.serve.config import AutoscalingContext

from serving.load import BACKLOG_METRIC, desired_replicas

POLICY_PATH = "deployments.autoscaling:RouterAutoscalingPolicy"


class RouterAutoscalingPolicy:
    """Called by Serve every control-loop tick with the deployment's metrics; returns the replicas
    wanted (Serve then applies min/max, the scaling factors and the up/down delays)."""

    def __call__(self, ctx: AutoscalingContext) -> tuple[float, dict[str, Any]]:
        if not ctx.current_num_replicas:  # scaled to zero: a replica as soon as requests wait for one
            return max(ctx.target_num_replicas, 1 if ctx.total_num_requests > 0 else 0), {}
        backlogs = (ctx.aggregated_metrics or {}).get(BACKLOG_METRIC, {})
        target = ctx.config.get_target_ongoing_requests() if ctx.config is not None else 1.0
        return desired_replicas(ctx.current_num_replicas, ctx.total_num_requests, backlogs.values(), target), {}
