"""A deploy that cannot fit is refused before anything is submitted when nothing can add a node;
pending pipelines show their demand to Ray's autoscaler (cluster.deployer, cluster.demand; no Ray)."""

from __future__ import annotations

import asyncio
import importlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from cluster import deployer as deployer_module
from cluster.demand import PendingDemand
from cluster.deployer import Deployer
from cluster.settings import CorralSettings
from deployments.ray_private import mirrors_live_nodes
from pipelines.errors import BadPayload, NotReady
from pipelines.placement import Autoscaler, NodeType

TWO_GPUS = {
    "steps": [
        {
            "name": "model",
            "python": "pipelines.builtin:Select",
            "config": {"columns": ["x"]},
            "resources": {"num_cpus": 0.1, "num_gpus": 2},
        }
    ],
    "router": {"num_cpus": 0.1, "autoscaling": {"min_replicas": 1, "max_replicas": 1}},
}
ONE_GPU_NODE = {"CPU": 16.0, "GPU": 1.0}


class Registry:
    """Only what a deploy reads before it submits anything."""

    def pipeline_state(self, workspace: str, name: str) -> None:
        return None


@pytest.fixture
def deployer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Deployer:
    monkeypatch.setattr(deployer_module, "cluster_totals", lambda: dict(ONE_GPU_NODE))

    def no_submit(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("nothing may be submitted to Serve")

    monkeypatch.setattr(deployer_module.serve, "run_many", no_submit)
    monkeypatch.setattr(deployer_module.serve, "delete", no_submit)
    return Deployer(CorralSettings(home=tmp_path), Registry())  # type: ignore[arg-type]


def _deploy(deployer: Deployer, timeout_s: float | None = None) -> dict[str, Any]:
    pv = SimpleNamespace(spec=TWO_GPUS, version=1, resolved={})
    return asyncio.run(deployer.deploy("default", "big", pv, timeout_s=timeout_s))  # type: ignore[arg-type]


def test_without_an_autoscaler_a_deploy_that_cannot_fit_is_a_503_at_once_and_nothing_is_submitted(
    deployer: Deployer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(deployer_module, "autoscaler", lambda: None)
    with pytest.raises(NotReady) as refused:
        _deploy(deployer)
    assert refused.value.message.startswith(
        "pipeline 'big' cannot start: it needs 2 GPUs; the cluster has 1 GPU, and no autoscaler runs that could "
        "add a node. Add a node with those resources"
    ), refused.value.message
    assert refused.value.retry_after_s == 10
    assert not deployer.deploying and not deployer.pending


def test_node_types_that_cannot_supply_it_are_refused_at_once_too(
    deployer: Deployer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(deployer_module, "autoscaler", lambda: Autoscaler((NodeType("cpu", {"CPU": 8.0}, 10),)))
    with pytest.raises(NotReady, match="its autoscaler's node types reach at most 1 GPU"):
        _deploy(deployer)


@pytest.mark.parametrize(
    "found", [Autoscaler(), Autoscaler((NodeType("gpu", {"GPU": 1.0}, 4),))], ids=["says-nothing", "can-add"]
)
def test_an_autoscaler_that_may_add_the_node_gets_the_deadline_to(
    deployer: Deployer, monkeypatch: pytest.MonkeyPatch, found: Autoscaler
) -> None:
    monkeypatch.setattr(deployer_module, "autoscaler", lambda: found)
    submitted: list[float] = []

    async def run(*args: Any) -> None:
        submitted.append(args[-1])

    monkeypatch.setattr(deployer, "_run", run)
    monkeypatch.setattr(deployer.registry, "mark_deployed", lambda *args: None, raising=False)
    assert _deploy(deployer, timeout_s=8)["status"] == "running"
    assert submitted == [8]


def test_when_ray_will_not_say_the_deploy_waits_rather_than_being_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    def moved() -> None:
        raise ImportError("cannot import name 'state' from 'ray._private'")

    monkeypatch.setattr(deployer_module, "autoscaler", moved)
    assert deployer_module._autoscaler_or_unknown() == Autoscaler()


def test_a_deploy_deadline_beyond_what_the_proxy_keeps_a_connection_is_a_400(deployer: Deployer) -> None:
    with pytest.raises(BadPayload, match=r"a deploy waits at most 600 s \(X-Corral-Timeout-Ms: 600000\)"):
        _deploy(deployer, timeout_s=601)


def test_a_head_started_by_hand_mirrors_its_nodes_as_read_only_node_types() -> None:
    node = "e2f1489f21ec530c105607dc7e17ad62"
    read_only = {"autoscaler_report": {"node_type_mapping": {node: f"node_{node}"}, "legacy": True}}
    assert mirrors_live_nodes(read_only) is True
    launched = {"autoscaler_report": {"node_type_mapping": {"10.0.0.2": "ray.head.default", "10.0.0.3": "gpu"}}}
    assert mirrors_live_nodes(launched) is False
    assert mirrors_live_nodes({"time": 1.0}) is None, "a monitor that has not reported yet says nothing"


class FakeGroups:
    def __init__(self) -> None:
        self.created: list[tuple[list[dict[str, float]], str, str]] = []
        self.removed: list[str] = []

    def placement_group(self, bundles: list[dict[str, float]], strategy: str, name: str) -> str:
        self.created.append((bundles, strategy, name))
        return name

    def remove_placement_group(self, group: str) -> None:
        self.removed.append(group)


@pytest.fixture
def groups(monkeypatch: pytest.MonkeyPatch) -> FakeGroups:
    ray_groups = importlib.import_module("ray.util.placement_group")  # `ray.util.placement_group` is the function
    fake = FakeGroups()
    monkeypatch.setattr(ray_groups, "placement_group", fake.placement_group)
    monkeypatch.setattr(ray_groups, "remove_placement_group", fake.remove_placement_group)
    return fake


def test_a_pending_pipeline_asks_once_with_its_startup_bundles_and_deploying_removes_the_ask(
    deployer: Deployer, groups: FakeGroups
) -> None:
    from pipelines.spec import PipelineSpec

    spec = PipelineSpec.model_validate(TWO_GPUS)
    asyncio.run(deployer.set_pending("default--big", "needs 2 GPUs; the cluster has 1 GPU", spec))
    asyncio.run(deployer.set_pending("default--big", "needs 2 GPUs; the cluster has 1 GPU", spec))  # re-checked
    assert groups.created == [([{"CPU": 0.1}, {"CPU": 0.1, "GPU": 2.0}], "PACK", "corral-pending:default--big")]
    assert deployer.pending == {"default--big": "needs 2 GPUs; the cluster has 1 GPU"}
    asyncio.run(deployer.clear_pending("default--big"))
    assert groups.removed == ["corral-pending:default--big"] and not deployer.pending
    asyncio.run(deployer.set_pending("default--big", "it fits the cluster but did not start: ...", None))
    assert len(groups.created) == 1, "a pipeline that fits lacks no resource: nothing to ask for"


def test_removing_a_group_ray_already_dropped_is_not_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    ray_groups = importlib.import_module("ray.util.placement_group")

    def gone(group: Any) -> None:
        raise ValueError("placement group not found")

    monkeypatch.setattr(ray_groups, "remove_placement_group", gone)
    demand = PendingDemand()
    demand.groups["default--big"] = object()
    demand.drop("default--big")
    assert not demand.groups
