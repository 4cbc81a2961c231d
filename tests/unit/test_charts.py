from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from monitoring.assay_spec import AssaySpec
from monitoring.assays import WindowResult, run_windows
from monitoring.charts import DPI, FIGSIZE, bin_labels, drift_chart_png

T0 = datetime(2024, 5, 8, tzinfo=UTC)
SPEC = AssaySpec.model_validate(
    {"pipeline": "fraud", "target": "out.probability", "baseline": {"values": [0.0, 1.0]}, "window": {"width": "1h"}}
)


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from the IHDR chunk, which a valid PNG has right after the signature."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def check_png(data: bytes) -> None:
    assert data.startswith(b"\x89PNG")
    assert len(data) > 1024
    assert png_size(data) == (round(FIGSIZE[0] * DPI), round(FIGSIZE[1] * DPI))
    assert data.endswith(b"IEND\xaeB`\x82")  # not truncated


def drifting_results() -> list[WindowResult]:
    rng = np.random.default_rng(5)
    baseline = rng.normal(0, 1, 2000)
    bounds = [(T0 + timedelta(hours=h), T0 + timedelta(hours=h + 1)) for h in range(6)]
    # shift grows by hour; hour 3 has no traffic
    samples = {s: (np.array([]) if i == 3 else rng.normal(0.3 * i, 1, 500)) for i, (s, _) in enumerate(bounds)}
    return run_windows(SPEC, baseline, bounds, lambda s, e: samples[s])


def test_chart_with_windows() -> None:
    results = drifting_results()
    assert results[3].score is None
    assert {r.status for r in results} >= {"ok", "alert"}
    check_png(drift_chart_png(results, SPEC))


def test_chart_with_no_windows() -> None:
    check_png(drift_chart_png([], SPEC))


def test_chart_when_no_window_has_data() -> None:
    results = run_windows(SPEC, np.array([0.0, 0.5, 1.0]), [(T0, T0 + timedelta(hours=1))], lambda s, e: np.array([]))
    assert results[0].score is None
    check_png(drift_chart_png(results, SPEC))


def test_chart_with_many_bins_and_constant_baseline() -> None:
    many = AssaySpec.model_validate({**SPEC.model_dump(), "bins": {"count": 100}})
    rng = np.random.default_rng(1)
    bounds = [(T0, T0 + timedelta(days=1))]
    results = run_windows(many, rng.normal(0, 1, 5000), bounds, lambda s, e: rng.normal(0, 1, 99))
    assert len(results[0].expected) == 102
    check_png(drift_chart_png(results, many))
    check_png(drift_chart_png(run_windows(SPEC, np.full(10, 2.0), bounds, lambda s, e: np.array([2.0, 3.0])), SPEC))


@pytest.mark.parametrize(
    ("edges", "labels"),
    [
        ([0.12, 0.4, 0.97], ["< 0.12", "0.12\u20130.4", "0.4\u20130.97", "> 0.97"]),
        ([2.0, 2.0], ["< 2", "= 2", "> 2"]),
        ([], []),
    ],
)
def test_bin_labels(edges: list[float], labels: list[str]) -> None:
    assert bin_labels(edges) == labels
