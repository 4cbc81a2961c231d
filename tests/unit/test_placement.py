"""Placement: the spec field, segments of a variant, and what the router replica takes on (no Ray)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pipelines.placement import (
    Autoscaler,
    NodeType,
    autoscaler_reach,
    inline_steps,
    own_steps,
    refusal,
    router_resources,
    router_scaling,
    segments,
    shortfall,
    startup_bundles,
    startup_needs,
)
from pipelines.spec import PipelineSpec, StepSpec


def step(name: str, **extra: object) -> dict[str, object]:
    return {"name": name, "python": "pipelines.builtin:Select", "config": {"columns": ["x"]}, **extra}


def test_auto_is_inline_for_cpu_steps_and_own_for_gpu_or_accelerator_steps() -> None:
    assert StepSpec.model_validate(step("a")).inline
    assert not StepSpec.model_validate(step("b", resources={"num_gpus": 1})).inline
    assert not StepSpec.model_validate(step("c", resources={"accelerator_type": "A100"})).inline
    assert not StepSpec.model_validate(step("d", placement="own")).inline
    assert StepSpec.model_validate(step("e", placement="inline")).inline


@pytest.mark.parametrize("resources", [{"num_gpus": 0.5}, {"accelerator_type": "T4"}])
def test_inline_placement_of_an_accelerator_step_is_refused_with_the_fix(resources: dict[str, object]) -> None:
    with pytest.raises(ValidationError, match=r"step 'm' asks for a GPU or accelerator.*use placement 'own'"):
        StepSpec.model_validate(step("m", placement="inline", resources=resources))


def test_unknown_placement_lists_the_allowed_values() -> None:
    with pytest.raises(ValidationError, match=r"'auto', 'inline' or 'own'"):
        StepSpec.model_validate(step("m", placement="sidecar"))


def test_consecutive_steps_of_one_place_form_one_segment() -> None:
    spec = PipelineSpec.model_validate(
        {
            "steps": [
                step("a"),
                step("b"),
                step("g", resources={"num_gpus": 1}),
                step("h", placement="own"),
                step("c"),
            ]
        }
    )
    cut = segments(spec.variants["main"].steps)
    assert [(s.inline, [x.name for x in s.steps]) for s in cut] == [
        (True, ["a", "b"]),
        (False, ["g", "h"]),
        (True, ["c"]),
    ]
    assert [s.name for _, s in inline_steps(spec)] == ["a", "b", "c"]
    assert [s.name for _, s in own_steps(spec)] == ["g", "h"]


def test_router_takes_on_the_resources_of_every_inline_step_of_every_variant() -> None:
    spec = PipelineSpec.model_validate(
        {
            "variants": {
                "a": {"steps": [step("x", resources={"num_cpus": 0.5, "memory": 100}), step("y")]},
                "b": {"steps": [step("x", resources={"num_cpus": 1, "memory": 50}), step("z", placement="own")]},
            },
            "router": {"num_cpus": 0.25},
        }
    )
    resources = router_resources(spec)
    assert resources.num_cpus == 0.25 + 0.5 + 0.5 + 1  # y has the default 0.5; z runs elsewhere
    assert resources.memory == 150


def test_router_autoscaling_honours_inline_steps_that_state_one() -> None:
    spec = PipelineSpec.model_validate(
        {
            "steps": [
                step("a", autoscaling={"min_replicas": 2, "max_replicas": 5, "target_ongoing_requests": 4}),
                step("b"),  # the default autoscaling of a step says nothing about its segment
                step("c", placement="own", autoscaling={"min_replicas": 3, "max_replicas": 9}),
            ],
            "router": {"autoscaling": {"min_replicas": 1, "max_replicas": 3, "target_ongoing_requests": 8}},
        }
    )
    scaling = router_scaling(spec)
    assert (scaling.min_replicas, scaling.max_replicas, scaling.target_ongoing_requests) == (2, 5, 4)


def test_router_scales_to_two_replicas_by_default() -> None:
    spec = PipelineSpec.model_validate({"steps": [step("a")]})
    scaling = router_scaling(spec)
    assert (scaling.min_replicas, scaling.max_replicas) == (1, 2)


def _gpu_spec(num_gpus: float = 1, replicas: int = 1, accelerator: str | None = None) -> PipelineSpec:
    gpu = {"num_cpus": 0.5, "num_gpus": num_gpus, **({"accelerator_type": accelerator} if accelerator else {})}
    scaling = {"min_replicas": replicas, "max_replicas": max(replicas, 1)}
    return PipelineSpec.model_validate(
        {
            "steps": [
                {"name": "pre", "python": "pipelines.builtin:Select", "config": {"columns": ["x"]}},
                {"name": "model", "model": "m:1", "resources": gpu, "autoscaling": scaling},
            ],
            "router": {"num_cpus": 0.25},
        }
    )


def test_startup_needs_add_the_router_with_its_inline_steps_and_each_own_step_at_min_replicas() -> None:
    needs = startup_needs(_gpu_spec(num_gpus=0.5, replicas=2))
    assert needs == {"CPU": 0.25 + 0.5 + 2 * 0.5, "GPU": 1.0}
    assert "GPU" not in startup_needs(_gpu_spec(replicas=0)), "a step at zero replicas needs nothing to start"


def test_a_pipeline_that_cannot_be_placed_says_what_it_needs_and_what_the_cluster_has() -> None:
    assert shortfall(_gpu_spec(), {"CPU": 16.0}) == "needs 1 GPU; the cluster has 0 GPUs"
    assert shortfall(_gpu_spec(num_gpus=1, replicas=3), {"CPU": 16.0, "GPU": 2.0}) == (
        "needs 3 GPUs; the cluster has 2 GPUs"
    )
    assert shortfall(_gpu_spec(), {"CPU": 16.0, "GPU": 1.0}) is None
    assert shortfall(_gpu_spec(accelerator="A100"), {"CPU": 16.0, "GPU": 4.0}) == (
        "needs an accelerator of type A100; the cluster has none"
    )
    assert shortfall(_gpu_spec(), {"CPU": 1.0, "GPU": 1.0}) == "needs 1.25 CPUs; the cluster has 1 CPU"


def test_startup_bundles_are_one_per_replica_at_min_replicas_as_serve_asks_ray() -> None:
    spec = PipelineSpec.model_validate(
        {
            "steps": [
                step("pre", resources={"num_cpus": 0.5, "memory": 1000}),
                step(
                    "g",
                    resources={"num_cpus": 1, "num_gpus": 2, "accelerator_type": "T4"},
                    autoscaling={"min_replicas": 2, "max_replicas": 3},
                ),
                step("idle", placement="own", autoscaling={"min_replicas": 0, "max_replicas": 2}),
            ],
            "router": {"num_cpus": 0.25, "autoscaling": {"min_replicas": 2, "max_replicas": 2}},
        }
    )
    router = {"CPU": 0.75, "memory": 1000.0}
    gpu = {"CPU": 1.0, "GPU": 2.0, "accelerator_type:T4": 0.001}
    assert startup_bundles(spec) == [router, router, gpu, gpu]  # a step at zero replicas asks for nothing
    assert startup_needs(spec) == {"CPU": 3.5, "GPU": 4.0, "accelerator_type:T4": 0.002}  # memory is not checked


def test_a_bundle_that_asks_for_nothing_is_left_out() -> None:
    spec = PipelineSpec.model_validate({"steps": [step("a", resources={"num_cpus": 0})], "router": {"num_cpus": 0}})
    assert startup_bundles(spec) == []


def test_without_an_autoscaler_a_pipeline_that_does_not_fit_is_refused_naming_what_it_lacks() -> None:
    assert refusal(_gpu_spec(num_gpus=2), {"CPU": 16.0, "GPU": 1.0}, None) == (
        "needs 2 GPUs; the cluster has 1 GPU, and no autoscaler runs that could add a node"
    )
    assert refusal(_gpu_spec(num_gpus=1), {"CPU": 16.0, "GPU": 1.0}, None) is None, "it fits: nothing to refuse"


def test_an_autoscaler_that_does_not_say_what_it_can_add_gets_the_chance_to() -> None:
    assert refusal(_gpu_spec(num_gpus=64), {"CPU": 16.0}, Autoscaler()) is None


GPU_NODES = NodeType("gpu", {"CPU": 8.0, "GPU": 1.0}, max_count=2)
CPU_NODES = NodeType("cpu", {"CPU": 16.0}, max_count=10)


def test_node_types_that_can_supply_the_shortfall_keep_the_deploy_waiting() -> None:
    autoscaler = Autoscaler((CPU_NODES, GPU_NODES))
    assert refusal(_gpu_spec(num_gpus=1, replicas=3), {"CPU": 4.0, "GPU": 1.0}, autoscaler) is None  # 1 + 2 GPUs
    unlimited = Autoscaler((NodeType("gpu", {"GPU": 8.0}, max_count=None),))
    assert refusal(_gpu_spec(num_gpus=64), {"CPU": 4.0}, unlimited) is None


def test_node_types_that_cannot_supply_it_are_a_refusal_saying_how_far_they_reach() -> None:
    autoscaler = Autoscaler((CPU_NODES, GPU_NODES, NodeType("spare", {"GPU": 4.0}, max_count=0)))
    assert refusal(_gpu_spec(num_gpus=1, replicas=4), {"CPU": 4.0, "GPU": 1.0}, autoscaler) == (
        "needs 4 GPUs; the cluster has 1 GPU, and its autoscaler's node types reach at most 3 GPUs"
    )
    capped = Autoscaler((NodeType("gpu", {"GPU": 1.0}, max_count=None),), limits={"GPU": 2.0})
    assert refusal(_gpu_spec(num_gpus=3), {"CPU": 4.0}, capped) == (
        "needs 3 GPUs; the cluster has 0 GPUs, and its autoscaler's node types reach at most 2 GPUs"
    )
    assert autoscaler_reach({"GPU": 5.0}, capped)["GPU"] == 5.0, "a limit never takes away what the cluster has"


def test_an_accelerator_type_is_supplied_by_a_node_type_naming_it_or_by_a_gpu_node_naming_none() -> None:
    a100 = _gpu_spec(accelerator="A100")
    named = Autoscaler((NodeType("a100", {"GPU": 1.0, "accelerator_type:A100": 1.0}, max_count=1),))
    assert refusal(a100, {"CPU": 4.0, "GPU": 1.0}, named) is None
    unnamed = Autoscaler((GPU_NODES,))  # Ray learns a GPU node's accelerator type once it runs
    assert refusal(a100, {"CPU": 4.0, "GPU": 1.0}, unnamed) is None
    other = Autoscaler((NodeType("t4", {"GPU": 1.0, "accelerator_type:T4": 1.0}, max_count=4),))
    assert refusal(a100, {"CPU": 4.0, "GPU": 1.0}, other) == (
        "needs an accelerator of type A100; the cluster has none, and its autoscaler's node types have no "
        "accelerator of type A100"
    )
