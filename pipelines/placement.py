"""Where each step of a variant runs: a variant's chain cut into segments, and what the router needs.

Consecutive inline steps form one inline segment, run in-process one after another by the
deployment that holds it (the router); consecutive `own` steps form one remote segment, a chain of
deployments called through handles. The router replica runs every inline step of every variant,
so their resources add up on it and its autoscaling honours the most demanding of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.spec import Autoscaling, PipelineSpec, Resources, StepSpec


@dataclass(frozen=True)
class Segment:
    """Consecutive steps of one variant that run in the same place."""

    inline: bool
    steps: tuple[StepSpec, ...]


def segments(steps: list[StepSpec]) -> list[Segment]:
    """The chain of a variant as segments, in order."""
    out: list[Segment] = []
    for step in steps:
        if out and out[-1].inline == step.inline:
            out[-1] = Segment(step.inline, (*out[-1].steps, step))
        else:
            out.append(Segment(step.inline, (step,)))
    return out


def inline_steps(spec: PipelineSpec) -> list[tuple[str, StepSpec]]:
    """Every (variant, step) of the pipeline that runs inside the router."""
    return [(variant, step) for variant, v in spec.variants.items() for step in v.steps if step.inline]


def own_steps(spec: PipelineSpec) -> list[tuple[str, StepSpec]]:
    """Every (variant, step) of the pipeline that has its own deployment."""
    return [(variant, step) for variant, v in spec.variants.items() for step in v.steps if not step.inline]


def router_resources(spec: PipelineSpec) -> Resources:
    """One router replica's resources: its own plus those of every inline step it runs."""
    steps = [step for _, step in inline_steps(spec)]
    memories = [s.resources.memory for s in steps if s.resources.memory]
    return Resources(
        num_cpus=spec.router.num_cpus + sum(s.resources.num_cpus for s in steps),
        memory=sum(memories) if memories else None,
    )


def router_scaling(spec: PipelineSpec) -> Autoscaling:
    """The router's autoscaling: an inline step scales with the router, so the router takes the
    largest min/max replicas and the smallest target load of itself and of the inline steps that
    state an `autoscaling` (a step's default says nothing about the segment it joins)."""
    stated = [step.autoscaling for _, step in inline_steps(spec) if "autoscaling" in step.model_fields_set]
    scalings = [spec.router.autoscaling, *stated]
    return Autoscaling(
        min_replicas=max(s.min_replicas for s in scalings),
        max_replicas=max(s.max_replicas for s in scalings),
        target_ongoing_requests=min(s.target_ongoing_requests for s in scalings),
        upscale_delay_s=spec.router.autoscaling.upscale_delay_s,
        downscale_delay_s=spec.router.autoscaling.downscale_delay_s,
    )


def startup_needs(spec: PipelineSpec) -> dict[str, float]:
    """Ray resources a pipeline's replicas take when it starts: every deployment at its minimum."""
    needs: dict[str, float] = {}

    def add(resource: str, amount: float) -> None:
        if amount > 0:
            needs[resource] = needs.get(resource, 0.0) + amount

    routers = router_scaling(spec).min_replicas
    add("CPU", router_resources(spec).num_cpus * routers)
    for _, step in own_steps(spec):
        replicas = step.autoscaling.min_replicas
        add("CPU", step.resources.num_cpus * replicas)
        add("GPU", step.resources.num_gpus * replicas)
        if step.resources.accelerator_type:
            # Ray's convention: a node of that type offers `accelerator_type:<type>`; a replica takes 0.001.
            add(f"accelerator_type:{step.resources.accelerator_type}", 0.001 * replicas)
    return needs


def shortfall(spec: PipelineSpec, cluster: dict[str, float]) -> str | None:
    """Why the pipeline cannot start on a cluster with these resource totals, or None if it can.

    Totals, not what is free: a pipeline that waits for others to scale down is not unplaceable.
    """
    missing = []
    for resource, amount in startup_needs(spec).items():
        have = cluster.get(resource, 0.0)
        if amount > have + 1e-9:
            missing.append(f"needs {_amount(resource, amount)}; the cluster has {_amount(resource, have)}")
    return ", ".join(missing) or None


def _amount(resource: str, amount: float) -> str:
    if resource.startswith("accelerator_type:"):
        kind = resource.split(":", 1)[1]
        return f"an accelerator of type {kind}" if amount > 0 else "none"
    return f"{amount:g} {resource}" + ("s" if amount != 1 and resource in ("CPU", "GPU") else "")
