"""Where each step of a variant runs: a variant's chain cut into segments, and what the router needs.

Consecutive inline steps form one inline segment, run in-process one after another by the
deployment that holds it (the router); consecutive `own` steps form one remote segment, a chain of
deployments called through handles. The router replica runs every inline step of every variant,
so their resources add up on it and its autoscaling honours the most demanding of them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

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


def startup_bundles(spec: PipelineSpec) -> list[dict[str, float]]:
    """One Ray resource bundle per replica the pipeline starts with (every deployment at its
    minimum), as Serve asks Ray for it: the demand a placement group shows an autoscaler."""
    router = router_resources(spec)
    router_bundle = _bundle(router.num_cpus, 0, router.memory, None)
    bundles = [router_bundle] * router_scaling(spec).min_replicas
    for _, step in own_steps(spec):
        r = step.resources
        bundles += [_bundle(r.num_cpus, r.num_gpus, r.memory, r.accelerator_type)] * step.autoscaling.min_replicas
    return [bundle for bundle in bundles if bundle]  # Ray refuses an empty bundle; it needs no room either


def _bundle(cpus: float, gpus: float, memory: int | None, accelerator: str | None) -> dict[str, float]:
    bundle = {"CPU": float(cpus), "GPU": float(gpus), "memory": float(memory or 0)}
    if accelerator:
        # Ray's convention: a node of that type offers `accelerator_type:<type>`; a replica takes 0.001.
        bundle[f"accelerator_type:{accelerator}"] = 0.001
    return {resource: amount for resource, amount in bundle.items() if amount > 0}


def startup_needs(spec: PipelineSpec) -> dict[str, float]:
    """Ray resources a pipeline's replicas take when it starts: every deployment at its minimum.

    Memory is left out: Ray's total counts the nodes' memory, and a reservation is rarely what
    keeps a pipeline from a cluster; Serve still asks for it.
    """
    needs: dict[str, float] = {}
    for bundle in startup_bundles(spec):
        for resource, amount in bundle.items():
            if resource != "memory":
                needs[resource] = needs.get(resource, 0.0) + amount
    return needs


def shortfall(spec: PipelineSpec, cluster: Mapping[str, float]) -> str | None:
    """Why the pipeline cannot start on a cluster with these resource totals, or None if it can.

    Totals, not what is free: a pipeline that waits for others to scale down is not unplaceable.
    """
    missing = []
    for resource, amount in startup_needs(spec).items():
        have = cluster.get(resource, 0.0)
        if amount > have + 1e-9:
            missing.append(f"needs {_amount(resource, amount)}; the cluster has {_amount(resource, have)}")
    return ", ".join(missing) or None


@dataclass(frozen=True)
class NodeType:
    """A kind of node an autoscaler can add: what one offers, and how many at most (None: no limit)."""

    name: str
    resources: Mapping[str, float]
    max_count: int | None


@dataclass(frozen=True)
class Autoscaler:
    """What can add nodes to a cluster, as Ray tells it.

    `node_types` None: an autoscaler runs but does not say what it can add, so any shortfall may
    yet be met. `limits`: cluster-wide caps per resource, when the autoscaler has them.
    """

    node_types: tuple[NodeType, ...] | None = None
    limits: Mapping[str, float] = field(default_factory=dict)


def refusal(spec: PipelineSpec, cluster: Mapping[str, float], autoscaler: Autoscaler | None) -> str | None:
    """Why the pipeline can start neither now nor on any node the autoscaler can add (`None`:
    nothing can add one); None when it fits, or when an autoscaler may yet add what it lacks.

    The autoscaler's reach is an upper bound (the cluster's totals plus every node type at its
    maximum count), so a pipeline is refused only when even that falls short.
    """
    reason = shortfall(spec, cluster)
    if reason is None:
        return None
    if autoscaler is None:
        return f"{reason}, and no autoscaler runs that could add a node"
    if autoscaler.node_types is None:
        return None
    reach = autoscaler_reach(cluster, autoscaler)
    beyond = [
        _beyond(resource, reach.get(resource, 0.0))
        for resource, amount in startup_needs(spec).items()
        if not _can_supply(reach, autoscaler.node_types, resource, amount)
    ]
    if not beyond:
        return None
    return f"{reason}, and its autoscaler's node types {' and '.join(beyond)}"


def autoscaler_reach(cluster: Mapping[str, float], autoscaler: Autoscaler) -> dict[str, float]:
    """The most of each resource the cluster could have: its totals plus every node type at its
    maximum count (inf without a limit), within the autoscaler's cluster-wide limits."""
    reach = dict(cluster)
    for node_type in autoscaler.node_types or ():
        if node_type.max_count == 0:
            continue
        for resource, amount in node_type.resources.items():
            if amount > 0:
                added = math.inf if node_type.max_count is None else amount * node_type.max_count
                reach[resource] = reach.get(resource, 0.0) + added
    for resource, limit in autoscaler.limits.items():
        if resource in reach:
            reach[resource] = max(cluster.get(resource, 0.0), min(reach[resource], limit))
    return reach


def _can_supply(reach: Mapping[str, float], node_types: tuple[NodeType, ...], resource: str, amount: float) -> bool:
    if amount <= reach.get(resource, 0.0) + 1e-9:
        return True
    # A node reports its accelerator type once it runs; autoscaler configs seldom list it. So a
    # GPU node type that names no accelerator type may turn out to be of the one asked for.
    return resource.startswith("accelerator_type:") and any(
        node_type.max_count != 0
        and node_type.resources.get("GPU", 0) > 0
        and not any(r.startswith("accelerator_type:") for r in node_type.resources)
        for node_type in node_types
    )


def _beyond(resource: str, reach: float) -> str:
    if resource.startswith("accelerator_type:"):
        return f"have no accelerator of type {resource.split(':', 1)[1]}"
    return f"reach at most {_amount(resource, reach)}"


def _amount(resource: str, amount: float) -> str:
    if resource.startswith("accelerator_type:"):
        kind = resource.split(":", 1)[1]
        return f"an accelerator of type {kind}" if amount > 0 else "none"
    return f"{amount:g} {resource}" + ("s" if amount != 1 and resource in ("CPU", "GPU") else "")
