from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from monitoring.assay_spec import AssaySpec, Bins, Thresholds
from monitoring.assays import (
    EPSILON,
    WindowResult,
    bin_edges,
    bin_fractions,
    evaluate_window,
    run_windows,
    score,
    status_of,
    window_bounds,
)
from pipelines.errors import InvalidInput

T0 = datetime(2024, 5, 8, tzinfo=UTC)


def make_spec(**changes: Any) -> AssaySpec:
    data: dict[str, Any] = {
        "pipeline": "fraud",
        "target": "out.probability",
        "baseline": {"values": [0.0, 1.0]},
        "window": {"width": "1h"},
    }
    data.update(changes)
    return AssaySpec.model_validate(data)


# --- scores against hand-computed references -------------------------------------------------------------------


def test_psi_hand_computed() -> None:
    # terms: (0.2-0.1)*ln(0.2/0.1) = 0.1*0.6931472 = 0.0693147
    #        (0.2-0.2)*ln(1)       = 0
    #        (0.2-0.3)*ln(0.2/0.3) = -0.1*-0.4054651 = 0.0405465
    #        (0.4-0.4)*ln(1)       = 0
    # total 0.1098612
    value, per_bin = score(np.array([0.1, 0.2, 0.3, 0.4]), np.array([0.2, 0.2, 0.2, 0.4]), "psi")
    assert value == pytest.approx(0.1098612, abs=1e-7)
    assert per_bin == pytest.approx([0.0693147, 0.0, 0.0405465, 0.0], abs=1e-7)


def test_psi_empty_bins_use_epsilon() -> None:
    assert EPSILON == 1e-4
    # expected [0.5, 0.5, 0], actual [0.5, 0.4, 0.1]; the empty expected bin counts as 1e-4:
    #   0
    #   (0.4-0.5)*ln(0.4/0.5) = -0.1*-0.2231436 = 0.0223144
    #   (0.1-0.0001)*ln(0.1/0.0001) = 0.0999*ln(1000) = 0.0999*6.9077553 = 0.6900848
    # total 0.7123991
    value, per_bin = score(np.array([0.5, 0.5, 0.0]), np.array([0.5, 0.4, 0.1]), "psi")
    assert value == pytest.approx(0.7123991, abs=1e-6)
    assert per_bin == pytest.approx([0.0, 0.0223144, 0.6900848], abs=1e-6)


def test_psi_identical_is_zero() -> None:
    fractions = np.array([0.0, 0.25, 0.25, 0.5, 0.0])
    assert score(fractions, fractions, "psi") == (0.0, [0.0] * 5)


def test_maxdiff_and_sumdiff_hand_computed() -> None:
    expected = np.array([0.1, 0.2, 0.3, 0.4])
    actual = np.array([0.3, 0.1, 0.2, 0.4])
    # |a-e| = [0.2, 0.1, 0.1, 0.0]: max 0.2, sum 0.4
    value, per_bin = score(expected, actual, "maxdiff")
    assert value == pytest.approx(0.2)
    assert per_bin == pytest.approx([0.2, 0.1, 0.1, 0.0])
    value, per_bin = score(expected, actual, "sumdiff")
    assert value == pytest.approx(0.4)
    assert per_bin == pytest.approx([0.2, 0.1, 0.1, 0.0])


def test_score_rejects_unknown_metric_and_mismatched_bins() -> None:
    with pytest.raises(InvalidInput, match="psi, maxdiff or sumdiff"):
        score(np.array([0.5, 0.5]), np.array([0.5, 0.5]), "kl")
    with pytest.raises(InvalidInput, match="same length"):
        score(np.array([0.5, 0.5]), np.array([1.0]), "psi")


# --- binning ---------------------------------------------------------------------------------------------------


def test_bin_fractions_outliers_and_closed_last_bin() -> None:
    edges = np.array([0.0, 1.0, 2.0])
    # bins: (<0) [0,1) [1,2] (>2)
    values = np.array([-5.0, -0.001, 0.0, 0.5, 1.0, 1.999, 2.0, 2.001, 7.0, np.nan])
    fractions = bin_fractions(values, edges)
    # 9 non-NaN values: left 2, [0,1) 2, [1,2] 3 (1.0, 1.999 and 2.0 on the closed edge), right 2
    assert fractions == pytest.approx([2 / 9, 2 / 9, 3 / 9, 2 / 9])
    assert fractions.sum() == pytest.approx(1.0)


def test_bin_fractions_empty_and_all_nan_are_zeros() -> None:
    edges = np.array([0.0, 1.0])
    assert bin_fractions(np.array([]), edges).tolist() == [0.0, 0.0, 0.0]
    assert bin_fractions(np.array([np.nan, np.nan]), edges).tolist() == [0.0, 0.0, 0.0]


def test_bin_fractions_rejects_unsorted_edges() -> None:
    with pytest.raises(InvalidInput, match="increasing"):
        bin_fractions(np.array([1.0]), np.array([1.0, 0.0]))


def test_quantile_edges() -> None:
    baseline = np.arange(101, dtype=float)  # 0..100: the quartiles are exact
    edges = bin_edges(baseline, Bins(mode="quantile", count=4))
    assert edges.tolist() == [0.0, 25.0, 50.0, 75.0, 100.0]
    # each interior bin holds a quarter of the baseline (the last one also holds the max)
    fractions = bin_fractions(baseline, edges)
    assert fractions.tolist() == pytest.approx([0, 25 / 101, 25 / 101, 25 / 101, 26 / 101, 0])


def test_quantile_edges_ignore_nan() -> None:
    baseline = np.array([np.nan, 4.0, 0.0, 2.0, np.nan])
    assert bin_edges(baseline, Bins(mode="quantile", count=2)).tolist() == [0.0, 2.0, 4.0]


def test_equal_edges() -> None:
    baseline = np.array([2.0, 3.0, 10.0, 4.0])
    assert bin_edges(baseline, Bins(mode="equal", count=4)).tolist() == [2.0, 4.0, 6.0, 8.0, 10.0]


def test_provided_edges() -> None:
    edges = bin_edges(np.array([100.0, 200.0]), Bins(mode="provided", edges=[0, 0.5, 1]))
    assert edges.tolist() == [0.0, 0.5, 1.0]


def test_constant_baseline_gives_one_point_bin() -> None:
    baseline = np.full(50, 3.0)
    for mode in ("quantile", "equal"):
        edges = bin_edges(baseline, Bins(mode=mode, count=5))  # type: ignore[arg-type]
        assert edges.tolist() == [3.0, 3.0]
        # bins: (<3) [3,3] (>3)
        assert bin_fractions(baseline, edges).tolist() == [0.0, 1.0, 0.0]
        assert bin_fractions(np.array([2.0, 3.0, 3.0, 4.0]), edges).tolist() == [0.25, 0.5, 0.25]


def test_tied_quantiles_are_merged() -> None:
    # 60% zeros: the 0.2 and 0.4 quantiles are 0 too, so three edges collapse into one.
    baseline = np.array([0.0] * 6 + [1.0, 2.0, 3.0, 4.0])
    edges = bin_edges(baseline, Bins(mode="quantile", count=5))
    assert np.all(np.diff(edges) > 0)
    assert edges[0] == 0.0
    assert edges[-1] == 4.0
    assert len(edges) == 4


def test_empty_baseline_is_invalid_input() -> None:
    for baseline in (np.array([]), np.array([np.nan])):
        with pytest.raises(InvalidInput, match="baseline has no values"):
            bin_edges(baseline, Bins())


def test_non_numeric_values_are_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="numeric"):
        bin_fractions(np.array(["a", "b"]), np.array([0.0, 1.0]))


# --- status ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "status"),
    [(None, "ok"), (0.0, "ok"), (0.0999, "ok"), (0.1, "warning"), (0.2499, "warning"), (0.25, "alert"), (3, "alert")],
)
def test_status_of(value: float | None, status: str) -> None:
    assert status_of(value, Thresholds(warning=0.1, alert=0.25)) == status


def test_status_equal_thresholds_skip_warning() -> None:
    assert status_of(0.3, Thresholds(warning=0.3, alert=0.3)) == "alert"


# --- windows ---------------------------------------------------------------------------------------------------


def test_window_bounds_back_to_back() -> None:
    bounds = window_bounds(T0, T0 + timedelta(hours=3), 3600, 3600)
    assert bounds == [(T0 + timedelta(hours=h), T0 + timedelta(hours=h + 1)) for h in range(3)]


def test_window_bounds_overlapping_and_partial_tail() -> None:
    # 2h windows every hour over 3.5h: starts 0h and 1h fit (end 3h <= 3.5h), 2h would end at 4h
    bounds = window_bounds(T0, T0 + timedelta(hours=3.5), 7200, 3600)
    assert bounds == [(T0, T0 + timedelta(hours=2)), (T0 + timedelta(hours=1), T0 + timedelta(hours=3))]


def test_window_bounds_gaps_and_too_short() -> None:
    bounds = window_bounds(T0, T0 + timedelta(minutes=50), 600, 1800)
    assert [s for s, _ in bounds] == [T0, T0 + timedelta(minutes=30)]
    assert window_bounds(T0, T0 + timedelta(minutes=59), 3600, 3600) == []
    assert window_bounds(T0, T0 - timedelta(hours=1), 3600, 3600) == []


def test_window_bounds_fractional_seconds_are_exact() -> None:
    # 1 s in 0.1 s steps: 10 windows, the last ending exactly at the end
    bounds = window_bounds(T0, T0 + timedelta(seconds=1), 0.1, 0.1)
    assert len(bounds) == 10
    assert bounds[-1][1] == T0 + timedelta(seconds=1)


def test_window_bounds_naive_is_utc() -> None:
    bounds = window_bounds(datetime(2024, 5, 8), datetime(2024, 5, 8, 1), 3600, 3600)
    assert bounds == [(T0, T0 + timedelta(hours=1))]


def test_window_bounds_rejects_bad_steps_and_too_many() -> None:
    with pytest.raises(InvalidInput, match="must be positive"):
        window_bounds(T0, T0 + timedelta(hours=1), 0, 60)
    with pytest.raises(InvalidInput, match="more than 10"):
        window_bounds(T0, T0 + timedelta(hours=1), 60, 60, max_windows=10)


def test_evaluate_window_without_rows() -> None:
    edges, expected = np.array([0.0, 1.0]), np.array([0.0, 1.0, 0.0])
    result = evaluate_window(edges, expected, np.array([np.nan]), T0, T0 + timedelta(hours=1), make_spec())
    assert result.score is None
    assert result.status == "ok"
    assert result.bin_scores == []
    assert result.rows == 0
    assert result.actual == [0.0, 0.0, 0.0]


def test_window_result_to_dict_is_json() -> None:
    edges, expected = np.array([0.0, 1.0]), np.array([0.0, 1.0, 0.0])
    result = evaluate_window(edges, expected, np.array([0.5, 2.0]), T0, T0 + timedelta(hours=1), make_spec())
    data = json.loads(json.dumps(result.to_dict()))
    assert set(data) == {
        "window_start",
        "window_end",
        "score",
        "status",
        "bin_scores",
        "rows",
        "edges",
        "expected",
        "actual",
    }
    assert data["window_start"] == "2024-05-08T00:00:00+00:00"
    assert data["window_end"] == "2024-05-08T01:00:00+00:00"
    assert data["rows"] == 2
    assert data["actual"] == [0.0, 0.5, 0.5]
    assert data["edges"] == [0.0, 1.0]
    # psi: bin 1 (0.5-1)*ln(0.5/1) = 0.3465736, bin 2 (0.5-0.0001)*ln(0.5/0.0001) = 0.4999*8.5171932 = 4.2577449
    assert data["score"] == pytest.approx(0.3465736 + 4.2577449, abs=1e-6)
    assert data["status"] == "alert"


def test_shifted_normal_alerts_and_unshifted_is_ok() -> None:
    rng = np.random.default_rng(7)
    baseline = rng.normal(0, 1, 5000)
    same, shifted = rng.normal(0, 1, 5000), rng.normal(1, 1, 5000)
    windows = [(T0, T0 + timedelta(hours=1)), (T0 + timedelta(hours=1), T0 + timedelta(hours=2))]
    by_start = {windows[0][0]: same, windows[1][0]: shifted}
    calls: list[tuple[datetime, datetime]] = []

    def values_in(start: datetime, end: datetime) -> np.ndarray:
        calls.append((start, end))
        return by_start[start]

    spec = make_spec(bins={"mode": "quantile", "count": 10})
    results = run_windows(spec, baseline, windows, values_in)
    assert calls == windows
    assert [r.rows for r in results] == [5000, 5000]
    assert results[0].score is not None
    assert results[0].score < 0.1
    assert results[0].status == "ok"
    assert results[1].score is not None
    assert results[1].score > 0.25
    assert results[1].status == "alert"
    assert len(results[1].edges) == 11
    assert len(results[1].expected) == len(results[1].actual) == len(results[1].bin_scores) == 12
    assert sum(results[1].bin_scores) == pytest.approx(results[1].score)


def test_maxdiff_spec_on_shifted_normal() -> None:
    rng = np.random.default_rng(11)
    baseline, shifted = rng.normal(0, 1, 5000), rng.normal(1, 1, 5000)
    spec = make_spec(metric="maxdiff", thresholds={"warning": 0.05, "alert": 0.1})
    (result,) = run_windows(spec, baseline, [(T0, T0 + timedelta(hours=1))], lambda s, e: shifted)
    assert result.score == pytest.approx(max(result.bin_scores))
    assert result.status == "alert"


def test_scores_a_million_values_fast() -> None:
    rng = np.random.default_rng(3)
    baseline, values = rng.normal(0, 1, 1_000_000), rng.normal(0.1, 1, 1_000_000)
    spec = make_spec(bins={"count": 20})
    started = time.perf_counter()
    (result,) = run_windows(spec, baseline, [(T0, T0 + timedelta(hours=1))], lambda s, e: values)
    elapsed = time.perf_counter() - started
    assert result.rows == 1_000_000
    assert elapsed < 1.0, f"scoring 1M values took {elapsed:.2f}s"


def test_window_result_is_frozen() -> None:
    result = WindowResult(T0, T0, None, "ok", [], 0)
    with pytest.raises(AttributeError):
        result.rows = 3  # type: ignore[misc]
