from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from monitoring.assay_spec import AssaySpec, Baseline, Bins, Thresholds, Window, parse_duration
from pipelines.errors import InvalidInput

CONTRACT: dict[str, Any] = {
    "pipeline": "fraud",
    "target": "out.probability",
    "baseline": {"start": "2024-05-01T00:00:00Z", "end": "2024-05-08T00:00:00Z"},
    "window": {"width": "1h", "interval": "1h", "start": "2024-05-08T00:00:00Z"},
    "metric": "psi",
    "bins": {"mode": "quantile", "count": 5},
    "thresholds": {"warning": 0.1, "alert": 0.25},
    "alert_webhook": "http://hooks.example/drift",
}


def spec_with(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(CONTRACT)
    data.update(changes)
    return data


def errors_of(data: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        AssaySpec.model_validate(data)
    return str(info.value)


# --- durations -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("10m", 600.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        ("1.5h", 5400.0),
        (" 2H ", 7200.0),
        (45, 45.0),
        (0.5, 0.5),
        ("90", 90.0),
        ("2.5", 2.5),
    ],
)
def test_parse_duration(text: str | int | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["0s", "0", 0, -5, "-1h", "", "1w", "h", "abc", "1h30m", "nan", "inf", True])
def test_parse_duration_rejects(bad: Any) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_duration(bad)
    assert "30s, 10m, 1h, 1d" in info.value.message  # says how to fix it


def test_parse_duration_message_names_the_value() -> None:
    with pytest.raises(InvalidInput, match=r"window width '0s' must be positive: use a duration such as 30s"):
        parse_duration("0s", "window width")


# --- the contract ----------------------------------------------------------------------------------------------


def test_contract_example_parses() -> None:
    spec = AssaySpec.model_validate(CONTRACT)
    assert spec.window.width == 3600.0
    assert spec.window.interval == 3600.0
    assert spec.window.start == datetime(2024, 5, 8, tzinfo=UTC)
    assert spec.baseline.start == datetime(2024, 5, 1, tzinfo=UTC)
    assert spec.baseline.values is None
    assert spec.metric == "psi"
    assert spec.active is True


def test_defaults() -> None:
    spec = AssaySpec.model_validate(
        {"pipeline": "fraud", "target": "in.amount", "baseline": {"values": [1, 2, 3]}, "window": {"width": "10m"}}
    )
    assert spec.metric == "psi"
    assert spec.bins == Bins(mode="quantile", count=5, edges=None)
    assert spec.thresholds == Thresholds(warning=0.1, alert=0.25)
    assert spec.window.interval == 600.0  # defaults to the width
    assert spec.window.start is None
    assert spec.alert_webhook is None


def test_spec_round_trips_through_json() -> None:
    spec = AssaySpec.model_validate(CONTRACT)
    assert AssaySpec.model_validate_json(spec.model_dump_json()) == spec


def test_naive_times_are_utc_and_offsets_are_converted() -> None:
    baseline = Baseline.model_validate({"start": "2024-05-01T00:00:00", "end": "2024-05-01T12:00:00+02:00"})
    assert baseline.start == datetime(2024, 5, 1, tzinfo=UTC)
    assert baseline.end is not None
    assert baseline.end.utcoffset() == timedelta(0)
    assert baseline.end == datetime(2024, 5, 1, 10, tzinfo=UTC)
    window = Window.model_validate({"width": 60, "start": datetime(2024, 5, 1, 3, tzinfo=timezone(timedelta(hours=3)))})
    assert window.start == datetime(2024, 5, 1, tzinfo=UTC)


# --- bad specs -------------------------------------------------------------------------------------------------


def test_unknown_metric() -> None:
    assert "metric" in errors_of(spec_with(metric="kl"))


@pytest.mark.parametrize("width", ["0s", 0, "-1m", "soon"])
def test_bad_window_width(width: Any) -> None:
    message = errors_of(spec_with(window={"width": width}))
    assert "window width" in message
    assert "30s, 10m, 1h, 1d" in message


def test_bad_window_interval() -> None:
    assert "window interval" in errors_of(spec_with(window={"width": "1h", "interval": "0m"}))


def test_empty_baseline_values() -> None:
    assert "baseline.values is empty" in errors_of(spec_with(baseline={"values": []}))


def test_non_finite_baseline_values() -> None:
    assert "finite" in errors_of(spec_with(baseline={"values": [1.0, float("nan")]}))


def test_both_baseline_forms() -> None:
    message = errors_of(
        spec_with(baseline={"start": "2024-05-01T00:00:00Z", "end": "2024-05-02T00:00:00Z", "values": [1.0]})
    )
    assert "not both" in message


@pytest.mark.parametrize("baseline", [{}, {"start": "2024-05-01T00:00:00Z"}, {"end": "2024-05-01T00:00:00Z"}])
def test_incomplete_baseline_explains_both_forms(baseline: dict[str, Any]) -> None:
    message = errors_of(spec_with(baseline=baseline))
    assert "{start, end}" in message
    assert "values" in message


def test_baseline_end_before_start() -> None:
    message = errors_of(spec_with(baseline={"start": "2024-05-02T00:00:00Z", "end": "2024-05-01T00:00:00Z"}))
    assert "not after start" in message


def test_provided_bins_need_edges() -> None:
    assert "needs edges" in errors_of(spec_with(bins={"mode": "provided"}))
    assert "needs edges" in errors_of(spec_with(bins={"mode": "provided", "edges": [0.5]}))


@pytest.mark.parametrize("edges", [[0, 1, 1, 2], [0, 2, 1], [3, 2]])
def test_provided_edges_must_increase(edges: list[float]) -> None:
    assert "strictly increasing" in errors_of(spec_with(bins={"mode": "provided", "edges": edges}))


def test_edges_forbidden_outside_provided_mode() -> None:
    assert "only used with mode 'provided'" in errors_of(spec_with(bins={"mode": "equal", "edges": [0, 1]}))


def test_provided_edges_parse() -> None:
    spec = AssaySpec.model_validate(spec_with(bins={"mode": "provided", "edges": [0, 0.5, 1]}))
    assert spec.bins.edges == [0.0, 0.5, 1.0]


@pytest.mark.parametrize("count", [0, 101])
def test_bin_count_range(count: int) -> None:
    assert "count" in errors_of(spec_with(bins={"count": count}))


@pytest.mark.parametrize("target", ["probability", "output.probability", "in.", "shadow.b.out.p", "out. x"])
def test_target_must_be_a_logged_column(target: str) -> None:
    assert "in.<input column> or out.<output column>" in errors_of(spec_with(target=target))


def test_unknown_extra_field() -> None:
    assert "extra" in errors_of(spec_with(schedule="hourly")).lower()
    assert "extra" in errors_of(spec_with(window={"width": "1h", "size": "1h"})).lower()


def test_thresholds() -> None:
    assert "warning" in errors_of(spec_with(thresholds={"warning": 0.5, "alert": 0.2}))
    assert "greater than or equal" in errors_of(spec_with(thresholds={"warning": -0.1}))
    assert Thresholds(warning=0.2, alert=0.2).alert == 0.2


def test_webhook_must_be_http() -> None:
    assert "alert_webhook" in errors_of(spec_with(alert_webhook="ftp://x"))
    spec = AssaySpec.model_validate(spec_with(alert_webhook="https://hooks.example/a"))
    assert spec.alert_webhook == "https://hooks.example/a"


def test_bad_pipeline_name() -> None:
    assert "pipeline name" in errors_of(spec_with(pipeline="Fraud Model"))


def test_paused_assay() -> None:
    assert AssaySpec.model_validate(spec_with(active=False)).active is False
