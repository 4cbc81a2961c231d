"""Placement: the spec field, segments of a variant, and what the router replica takes on (no Ray)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pipelines.placement import (
    inline_steps,
    own_steps,
    router_resources,
    router_scaling,
    segments,
    shortfall,
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
