"""The live settings of a pipeline's deployments, delivered as Serve `user_config`.

A change of these reaches running replicas through `reconfigure()`, without a restart: that is how
traffic ramps and model hot-swaps happen with no dropped request.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pipelines.spec import TrafficSpec


class RouterConfig(BaseModel):
    """What a router replica serves right now."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1, description="pipeline version")
    config_id: str = Field(default="", description="echoed on /ready: tells the deployer this config is live")
    traffic: TrafficSpec = Field(default_factory=TrafficSpec)
    probe_hash: str = Field(default="", description="sha256 of the deployer's readiness-probe secret")
    metadata: dict[str, Any] = Field(default_factory=dict, description="V2 model metadata of the pipeline")
    validations: dict[str, str] = Field(default_factory=dict)
    models: dict[str, str] = Field(
        default_factory=dict, description="sha256 of the ONNX model of each inline model step '<variant>.<step>'"
    )


class StepConfig(BaseModel):
    """What a step deployment (placement `own`) runs right now."""

    model_config = ConfigDict(extra="forbid")

    model_sha256: str | None = None


class RouterLimits(BaseModel):
    """What bounds a router replica's work (fixed for its lifetime: a change restarts the router)."""

    model_config = ConfigDict(extra="forbid")

    max_payload_bytes: int = Field(gt=0)
    max_queued_requests: int = Field(default=256, ge=1)
    max_queue_delay_s: float = Field(default=1.0, gt=0)
    request_timeout_s: float = Field(default=60.0, gt=0)
    log_ledger_dir: str | None = Field(default=None, description="where replicas count unsent log rows")
