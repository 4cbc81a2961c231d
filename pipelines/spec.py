"""Pipeline spec models (the public contract of DESIGN.md), validated with pydantic."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

NAME_PATTERN = r"^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?$"
_NAME_RE = re.compile(NAME_PATTERN)
DEFAULT_VARIANT = "main"
# allow_nan: let NaN/null reach the model (e.g. a GBDT that handles missing values); default is a 422.
MODEL_STEP_CONFIG_KEYS = frozenset({"allow_nan"})


def check_name(kind: str, value: str) -> str:
    """Names appear in URLs, Serve app names and file paths: keep them to a safe alphabet."""
    if not _NAME_RE.match(value):
        raise ValueError(
            f"{kind} name {value!r} is not allowed: use 1-63 lowercase letters, digits, '-' or '_', "
            "starting and ending with a letter or digit"
        )
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Batching(_Strict):
    """Server-side micro-batching of a step (`@serve.batch`)."""

    max_batch_size: int = Field(default=1, ge=1, le=100_000)
    wait_ms: float = Field(default=2.0, ge=0, le=10_000)


class Resources(_Strict):
    """Ray actor options of each replica of a step."""

    num_cpus: float = Field(default=0.5, ge=0)
    num_gpus: float = Field(default=0, ge=0)
    memory: int | None = Field(default=None, ge=0, description="bytes")
    accelerator_type: str | None = None


class Autoscaling(_Strict):
    """Replica autoscaling of a step (maps to Ray Serve's autoscaling_config)."""

    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int = Field(default=1, ge=1)
    target_ongoing_requests: float = Field(default=2, gt=0)
    upscale_delay_s: float | None = Field(default=None, ge=0, le=3600, description="default Serve's (30 s)")
    downscale_delay_s: float | None = Field(default=None, ge=0, le=86400, description="default Serve's (600 s)")

    @model_validator(mode="after")
    def _min_le_max(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"autoscaling.min_replicas ({self.min_replicas}) is above max_replicas "
                f"({self.max_replicas}): lower min_replicas or raise max_replicas"
            )
        return self


Placement = Literal["auto", "inline", "own"]


class StepSpec(_Strict):
    """One step: either a Python step class (`python:`) or a registry ONNX model (`model:`).

    `placement` says where it runs: `own` in its own Serve deployment `<variant>.<step>` (called
    through a handle, scaled by `autoscaling`), `inline` in-process in the deployment that runs its
    segment of consecutive inline steps (the router), `auto` (default) `own` for GPU/accelerator
    steps and `inline` otherwise. Outputs never depend on placement; only the cost does.
    """

    name: str
    python: str | None = Field(default=None, description="import path 'module:Class'")
    model: str | None = Field(default=None, description="registry model 'name' or 'name:version'")
    code: str | None = Field(default=None, description="uploaded code 'name' or 'name:version'")
    config: dict[str, Any] = Field(default_factory=dict)
    columns: list[str] | None = Field(default=None, description="model step: columns of a 2-D input")
    batching: Batching | None = None
    resources: Resources = Field(default_factory=Resources)
    autoscaling: Autoscaling = Field(default_factory=Autoscaling)
    placement: Placement = "auto"
    max_queued_requests: int = Field(
        default=128, ge=1, le=100_000, description="an own step's Serve queue bound: beyond it callers get a 503"
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name("step", v)

    @field_validator("python")
    @classmethod
    def _python(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$", v):
            raise ValueError(f"python step {v!r} must look like 'package.module:ClassName'")
        return v

    @model_validator(mode="after")
    def _one_kind(self) -> StepSpec:
        if (self.python is None) == (self.model is None):
            raise ValueError(
                f"step {self.name!r} must have exactly one of 'python' (a step class) or 'model' "
                "(a registry model name:version)"
            )
        if self.model is not None and self.code is not None:
            raise ValueError(f"step {self.name!r}: 'code' only goes with 'python' steps")
        if self.model is not None:
            unknown = sorted(set(self.config) - MODEL_STEP_CONFIG_KEYS)
            if unknown:
                raise ValueError(
                    f"step {self.name!r}: model steps take only config keys "
                    f"{sorted(MODEL_STEP_CONFIG_KEYS)}, not {unknown}"
                )
        if self.python is not None and self.columns is not None:
            raise ValueError(f"step {self.name!r}: 'columns' only goes with 'model' steps")
        if self.placement == "inline" and self.needs_accelerator:
            raise ValueError(
                f"step {self.name!r} asks for a GPU or accelerator, so it cannot run inline in the "
                "router: use placement 'own' (or 'auto', which gives it its own deployment)"
            )
        return self

    @property
    def kind(self) -> str:
        return "model" if self.model is not None else "python"

    @property
    def needs_accelerator(self) -> bool:
        return self.resources.num_gpus > 0 or self.resources.accelerator_type is not None

    @property
    def inline(self) -> bool:
        """True when the step runs in-process in its segment, False when it has its own deployment."""
        if self.placement == "auto":
            return not self.needs_accelerator
        return self.placement == "inline"


class VariantSpec(_Strict):
    """A named chain of steps."""

    steps: list[StepSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_steps(self) -> VariantSpec:
        names = [s.name for s in self.steps]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate step names {dupes}: give every step of a variant its own name")
        return self


class TrafficSpec(_Strict):
    """How live traffic is split between variants and mirrored to shadows."""

    weights: dict[str, float] = Field(default_factory=dict)
    key: str | None = None
    shadows: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _weights(self) -> TrafficSpec:
        for variant, weight in self.weights.items():
            if weight < 0:
                raise ValueError(f"traffic weight of {variant!r} is negative ({weight}): use 0 or more")
        if self.weights and sum(self.weights.values()) <= 0:
            raise ValueError("traffic weights are all zero: give at least one variant a positive weight")
        if len(set(self.shadows)) != len(self.shadows):
            raise ValueError(f"shadows {self.shadows} name a variant more than once: list each once")
        both = sorted(set(self.shadows) & {v for v, w in self.weights.items() if w > 0})
        if both:
            raise ValueError(
                f"{both} both weighted and shadow: a variant is either served (weight > 0) or a shadow"
            )
        return self

    def for_variants(self, variants: list[str]) -> TrafficSpec:
        """This traffic checked against a pipeline's variants; no weights means all to the first
        variant that is not a shadow. Raises ValueError naming what is wrong."""
        unknown = sorted((set(self.weights) | set(self.shadows)) - set(variants))
        if unknown:
            raise ValueError(f"traffic names unknown variants {unknown}; the variants are {sorted(variants)}")
        if self.weights:
            return self
        primary = next((v for v in variants if v not in self.shadows), None)
        if primary is None:
            raise ValueError("every variant is a shadow: at least one variant must serve traffic")
        return self.model_copy(update={"weights": {primary: 1.0}})


class RouterSpec(_Strict):
    """The pipeline's ingress router: its replicas (any number; traffic splits stay exact) and CPUs."""

    num_cpus: float = Field(default=0.25, ge=0)
    # Backpressure (serving.admission): a replica refuses new requests with a 503 + Retry-After when
    # this many are in flight, or when requests wait longer than this to start.
    max_queued_requests: int = Field(default=256, ge=1, le=100_000)
    max_queue_delay_ms: int = Field(default=1_000, ge=1, le=600_000)
    # Two replicas at most by default: one Python process cannot use both cores of a small machine.
    autoscaling: Autoscaling = Field(
        default_factory=lambda: Autoscaling(
            min_replicas=1, max_replicas=2, target_ongoing_requests=8, upscale_delay_s=5, downscale_delay_s=120
        )
    )

    @field_validator("autoscaling")
    @classmethod
    def _router_stays_up(cls, value: Autoscaling) -> Autoscaling:
        if value.min_replicas < 1:
            raise ValueError(
                "router.autoscaling.min_replicas must be at least 1: the router is the pipeline's HTTP ingress and "
                "answers 503 + Retry-After while a step scales up from zero; give the steps min_replicas: 0 instead"
            )
        return value


class PipelineSpec(_Strict):
    """A pipeline: named variants of step chains, a traffic policy and validations."""

    variants: dict[str, VariantSpec]
    traffic: TrafficSpec = Field(default_factory=TrafficSpec)
    router: RouterSpec = Field(default_factory=RouterSpec)
    validations: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _steps_shorthand(cls, data: Any) -> Any:
        if isinstance(data, dict) and "steps" in data:
            if "variants" in data:
                raise ValueError("give either 'steps' (one variant) or 'variants', not both")
            data = dict(data)
            data["variants"] = {DEFAULT_VARIANT: {"steps": data.pop("steps")}}
        return data

    @model_validator(mode="after")
    def _check(self) -> PipelineSpec:
        if not self.variants:
            raise ValueError("a pipeline needs at least one variant with steps")
        for name in self.variants:
            check_name("variant", name)
        self.traffic = self.traffic.for_variants(list(self.variants))
        return self


def parse_model_ref(ref: str) -> tuple[str, int | None]:
    """'fraud:2' -> ('fraud', 2); 'fraud' -> ('fraud', None) meaning the latest version."""
    name, _, version = ref.partition(":")
    check_name("model", name)
    if not version:
        return name, None
    if not version.isdigit() or int(version) < 1:
        raise ValueError(f"version in {ref!r} must be a positive integer, like '{name}:1'")
    return name, int(version)
