"""ray-cluster.yaml passes the Ray cluster launcher's own offline validation (no cloud credentials)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CONFIG_PATH = Path(__file__).resolve().parents[2] / "ray-cluster.yaml"


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    loaded = yaml.safe_load(CONFIG_PATH.read_text())
    assert isinstance(loaded, dict)
    return loaded


def _validated(config: dict[str, Any]) -> dict[str, Any]:
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def test_config_passes_the_launcher_validation(raw: dict[str, Any]) -> None:
    prepared = _validated(raw)
    node_types = prepared["available_node_types"]
    assert set(node_types) == {"head", "cpu_worker", "gpu_worker"}
    assert prepared["head_node_type"] == "head"
    assert node_types["head"]["max_workers"] == 0  # filled in by prepare_config
    assert (node_types["cpu_worker"]["min_workers"], node_types["cpu_worker"]["max_workers"]) == (0, 10)
    assert node_types["gpu_worker"]["resources"]["GPU"] >= 1
    assert "GPU" not in node_types["cpu_worker"]["resources"]


def test_corral_is_installed_and_gpu_nodes_swap_onnxruntime(raw: dict[str, Any]) -> None:
    prepared = _validated(raw)
    assert any("pip install" in c and "corral" in c for c in prepared["head_setup_commands"])
    assert any("pip install" in c and "corral" in c for c in prepared["worker_setup_commands"])
    gpu = prepared["available_node_types"]["gpu_worker"]["worker_setup_commands"]
    assert any("corral" in c for c in gpu)  # node-level commands replace the global ones
    swap = next(c for c in gpu if "onnxruntime-gpu" in c)
    assert swap.index("pip uninstall -y onnxruntime") < swap.index("onnxruntime-gpu")


def test_ray_starts_with_haproxy_ingress_and_dashboard(raw: dict[str, Any]) -> None:
    head = " ".join(raw["head_start_ray_commands"])
    assert "RAY_SERVE_ENABLE_HA_PROXY=1" in head and "--head" in head and "--include-dashboard=true" in head
    assert "RAY_SERVE_ENABLE_HA_PROXY=1" in " ".join(raw["worker_start_ray_commands"])


def test_every_node_gets_the_serve_environment_corral_up_gives_a_local_head(raw: dict[str, Any]) -> None:
    from cluster.lifecycle import RAY_PROCESS_ENV

    for commands in ("head_start_ray_commands", "worker_start_ray_commands"):
        started = " ".join(raw[commands])
        for name, value in RAY_PROCESS_ENV.items():
            assert f"{name}={value} " in started, (commands, name)


def test_validator_rejects_unknown_fields(raw: dict[str, Any]) -> None:
    with pytest.raises(jsonschema.ValidationError, match="not_a_ray_field"):
        _validated({**raw, "not_a_ray_field": True})
    bad_node = copy.deepcopy(raw)
    bad_node["available_node_types"]["gpu_worker"]["gpus"] = 1
    with pytest.raises(jsonschema.ValidationError):
        _validated(bad_node)
