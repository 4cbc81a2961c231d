from __future__ import annotations

import pytest
from pydantic import ValidationError

from pipelines.spec import PipelineSpec, TrafficSpec, parse_model_ref


def test_steps_shorthand_becomes_main_variant_with_all_traffic() -> None:
    spec = PipelineSpec.model_validate({"steps": [{"name": "m", "model": "fraud:1"}]})
    assert list(spec.variants) == ["main"]
    assert spec.traffic.weights == {"main": 1.0}


def test_contract_example_parses() -> None:
    spec = PipelineSpec.model_validate(
        {
            "variants": {
                "control": {
                    "steps": [
                        {"name": "pre", "python": "pipelines.builtin:Select", "config": {"columns": ["a"]}},
                        {
                            "name": "model",
                            "model": "fraud:1",
                            "batching": {"max_batch_size": 256, "wait_ms": 2},
                            "resources": {"num_cpus": 1, "num_gpus": 0},
                            "autoscaling": {
                                "min_replicas": 1,
                                "max_replicas": 4,
                                "target_ongoing_requests": 2,
                            },
                        },
                    ]
                },
                "challenger": {"steps": [{"name": "model", "model": "fraud:2"}]},
            },
            "traffic": {"weights": {"control": 90, "challenger": 10}, "key": "customer_id", "shadows": []},
            "validations": {"high_risk": "out.probability > 0.9"},
        }
    )
    assert spec.traffic.key == "customer_id"
    assert spec.variants["control"].steps[1].autoscaling.max_replicas == 4


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({"steps": [{"name": "a", "model": "m", "python": "x:Y"}]}, "exactly one of"),
        ({"steps": [{"name": "a"}]}, "exactly one of"),
        ({"steps": [{"name": "a", "model": "m"}, {"name": "a", "model": "m"}]}, "duplicate step names"),
        ({"steps": [{"name": "a", "model": "m", "colour": 1}]}, "Extra inputs"),
        ({"steps": [{"name": "A B", "model": "m"}]}, "not allowed"),
        ({"steps": [{"name": "a", "python": "not a path"}]}, "package.module:ClassName"),
        ({"steps": [], "variants": {}}, "either 'steps'"),
        ({"steps": [{"name": "a", "model": "m"}], "traffic": {"weights": {"other": 1}}}, "unknown variants"),
        ({"steps": [{"name": "a", "model": "m"}], "traffic": {"weights": {"main": 0}}}, "all zero"),
        ({"steps": [{"name": "a", "model": "m"}], "traffic": {"weights": {"main": -1}}}, "negative"),
        ({"steps": [{"name": "a", "model": "m", "max_queued_requests": 0}]}, "greater than or equal to 1"),
        ({"steps": [{"name": "a", "model": "m"}], "router": {"max_queued_requests": 0}}, "greater than or equal to 1"),
        ({"steps": [{"name": "a", "model": "m"}], "router": {"max_queue_delay_ms": 0}}, "greater than or equal to 1"),
        ({"steps": [{"name": "a", "model": "m"}], "router": {"max_queue_delay_ms": "soon"}}, "valid integer"),
        (
            {"steps": [{"name": "a", "model": "m", "autoscaling": {"min_replicas": 3, "max_replicas": 2}}]},
            "min_replicas",
        ),
        (
            {"steps": [{"name": "a", "model": "m"}], "router": {"autoscaling": {"min_replicas": 0, "max_replicas": 2}}},
            "router.autoscaling.min_replicas must be at least 1",
        ),
    ],
)
def test_bad_specs_say_what_to_fix(spec: dict, fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        PipelineSpec.model_validate(spec)
    assert fragment in str(info.value)


def test_shadow_that_is_also_weighted_is_rejected() -> None:
    with pytest.raises(ValidationError, match="both weighted and shadow"):
        TrafficSpec(weights={"a": 1, "b": 1}, shadows=["b"])


def test_model_refs() -> None:
    assert parse_model_ref("fraud:3") == ("fraud", 3)
    assert parse_model_ref("fraud") == ("fraud", None)
    with pytest.raises(ValueError, match="positive integer"):
        parse_model_ref("fraud:x")
