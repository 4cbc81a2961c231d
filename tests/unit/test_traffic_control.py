"""Traffic specs against a pipeline's variants, and the bounded shadow runner (no Ray)."""

from __future__ import annotations

import asyncio

import pyarrow as pa
import pytest
from pydantic import ValidationError

from pipelines.spec import PipelineSpec, TrafficSpec
from serving.shadows import ShadowOutcome, ShadowRunner


def test_for_variants_names_unknown_variants() -> None:
    with pytest.raises(ValueError, match=r"unknown variants \['ghost'\]; the variants are \['a', 'b'\]"):
        TrafficSpec(weights={"a": 1, "ghost": 1}).for_variants(["a", "b"])


def test_for_variants_without_weights_sends_all_to_the_first_non_shadow() -> None:
    traffic = TrafficSpec(shadows=["a"]).for_variants(["a", "b"])
    assert traffic.weights == {"b": 1.0} and traffic.shadows == ["a"]


def test_shadow_listed_twice_is_rejected() -> None:
    with pytest.raises(ValidationError, match="more than once"):
        TrafficSpec(weights={"a": 1}, shadows=["b", "b"])


def test_router_replicas_come_from_the_spec() -> None:
    spec = PipelineSpec.model_validate(
        {"steps": [{"name": "s", "python": "m:C"}], "router": {"autoscaling": {"min_replicas": 3, "max_replicas": 3}}}
    )
    assert spec.router.autoscaling.min_replicas == 3 and spec.router.num_cpus == 0.25


def test_shadow_runner_records_outputs_errors_and_drops() -> None:
    async def chain(variant: str, table: pa.Table) -> pa.Table:
        if variant == "boom":
            raise RuntimeError("exploded")
        await asyncio.sleep(0.05)
        return table

    async def scenario() -> tuple[list[ShadowOutcome], dict[str, int]]:
        runner = ShadowRunner(chain, max_in_flight=2, timeout_s=5)
        outcomes: list[ShadowOutcome] = []
        runner.listeners.append(outcomes.append)
        table = pa.table({"x": [1]})
        fired = [runner.fire("slow", table, "r1"), runner.fire("boom", table, "r2"), runner.fire("slow", table, "r3")]
        assert fired == [True, True, False]  # the third is over the backlog of two
        await runner.drain()
        return outcomes, runner.stats()

    outcomes, stats = asyncio.run(scenario())
    by_request = {o.request_id: o for o in outcomes}
    assert by_request["r1"].output is not None and by_request["r1"].error is None
    assert by_request["r2"].output is None and "internal error" in (by_request["r2"].error or "")
    assert by_request["r3"].error == "dropped: shadow backlog full"
    assert stats == {"slow.ok": 1, "boom.error": 1, "slow.dropped": 1, "in_flight": 0}


def test_shadow_runner_times_out_a_slow_shadow() -> None:
    async def chain(variant: str, table: pa.Table) -> pa.Table:
        await asyncio.sleep(5)
        return table

    async def scenario() -> list[ShadowOutcome]:
        runner = ShadowRunner(chain, timeout_s=0.05)
        outcomes: list[ShadowOutcome] = []
        runner.listeners.append(outcomes.append)
        runner.fire("slow", pa.table({"x": [1]}), "r1")
        await runner.drain()
        return outcomes

    [outcome] = asyncio.run(scenario())
    assert outcome.error == "timed out after 0.05 s"
