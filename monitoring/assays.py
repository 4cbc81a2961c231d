"""Drift-assay math: bin a baseline, bin each window the same way, score the difference. Pure numpy.

Bins: `edges` e_0 < ... < e_k give k+2 bins: a left outlier bin (< e_0), the interior bins [e_i, e_{i+1})
with the last one closed ([e_{k-1}, e_k]), and a right outlier bin (> e_k). The outlier bins catch window
values outside the baseline's range, which is exactly the drift a fixed binning would otherwise miss.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import numpy as np

from monitoring.assay_spec import AssaySpec, Bins, Thresholds, as_utc
from pipelines.errors import InvalidInput

# PSI takes ln(a / e): an empty bin would make it infinite. Fractions below EPSILON (zeros included) are raised
# to it, so one empty bin adds a large but finite term. 1e-4 is the usual choice: a bin that goes from 10% to
# empty scores (0.1 - 1e-4) * ln(0.1 / 1e-4) ~= 0.69, far above the default alert level of 0.25.
EPSILON = 1e-4
# A spec and a time range can ask for any number of windows; each one is a log query and a chart point.
MAX_WINDOWS = 10_000

Status = Literal["ok", "warning", "alert"]


def _as_floats(values: Any, what: str) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidInput(f"{what} must be numbers: an assay target must be a numeric column") from None
    return array.ravel()


def bin_edges(baseline: np.ndarray, bins: Bins) -> np.ndarray:
    """The edges of the interior bins, placed from the baseline's finite values.

    quantile: the quantiles at 0, 1/count, ..., 1 (first edge = min, last = max); equal: `count` equal-width
    bins from min to max; provided: `bins.edges`. Equal edges (ties in the baseline) are merged into one,
    since the bin between them would have zero width and could never hold a value. If only one distinct
    edge is left (a constant baseline c), the edges are [c, c]: one closed interior bin holding exactly c,
    with everything else an outlier.
    NaN and +-inf baseline values are ignored here (an infinite edge would make every bin infinite).
    Raises `InvalidInput` if no finite baseline value is left, whatever the mode: an empty baseline
    gives no expected distribution to compare with.
    """
    values = _as_floats(baseline, "baseline values")
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise InvalidInput(
            "the baseline has no values (NaN and infinite values are ignored): "
            "choose a baseline window that has logged traffic, or give baseline.values"
        )
    if bins.mode == "provided":
        if bins.edges is None:  # the spec validator forbids this; kept for Bins built with model_construct
            raise InvalidInput("bins mode 'provided' needs edges: give at least two increasing numbers")
        edges = np.asarray(bins.edges, dtype=np.float64)
    elif bins.mode == "equal":
        edges = np.linspace(values.min(), values.max(), bins.count + 1)
    else:
        edges = np.quantile(values, np.linspace(0.0, 1.0, bins.count + 1))
    edges = np.unique(edges)  # sorted, ties merged
    if edges.size == 1:
        edges = np.repeat(edges, 2)
    return edges


def bin_fractions(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The fraction of `values` in each of the `len(edges) + 1` bins (outlier bins first and last).

    NaN values are ignored; with no values left every fraction is 0.
    """
    edges = np.asarray(edges, dtype=np.float64)
    if edges.ndim != 1 or edges.size == 0 or np.any(np.diff(edges) < 0):
        raise InvalidInput(f"bin edges {edges.tolist()} must be a non-empty increasing list of numbers")
    data = _as_floats(values, "values")
    data = data[~np.isnan(data)]
    fractions = np.zeros(edges.size + 1, dtype=np.float64)
    if data.size == 0:
        return fractions
    # side="right" counts the edges <= v, which is the bin index with [e_i, e_{i+1}) bins and bin 0 = left
    # outliers; values equal to the last edge then land in the right outlier bin, so move them back into the
    # last interior bin (closed on the right).
    index = np.searchsorted(edges, data, side="right")
    index[data == edges[-1]] = edges.size - 1
    counts = np.bincount(index, minlength=edges.size + 1)
    return counts / data.size


def score(expected: np.ndarray, actual: np.ndarray, metric: str) -> tuple[float, list[float]]:
    """The drift score of `actual` bin fractions against `expected` ones, and each bin's part of it.

    psi: sum of (a - e) * ln(a / e), fractions below `EPSILON` raised to it first; the per-bin scores are the
    terms. maxdiff: max |a - e|. sumdiff: sum |a - e| (the L1 distance, 0..2, twice the total variation
    distance; absolute so that shifts in opposite directions do not cancel). For maxdiff and sumdiff the
    per-bin scores are |a - e|.
    """
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    if e.shape != a.shape or e.ndim != 1 or e.size == 0:
        raise InvalidInput(
            f"expected and actual fractions must be two non-empty lists of the same length "
            f"(got {e.shape} and {a.shape}): bin both with the same edges"
        )
    if metric == "psi":
        e, a = np.maximum(e, EPSILON), np.maximum(a, EPSILON)
        terms = (a - e) * np.log(a / e)
        return float(terms.sum()), terms.tolist()
    diff = np.abs(a - e)
    if metric == "maxdiff":
        return float(diff.max()), diff.tolist()
    if metric == "sumdiff":
        return float(diff.sum()), diff.tolist()
    raise InvalidInput(f"metric {metric!r} is not known: use psi, maxdiff or sumdiff")


def status_of(score: float | None, thresholds: Thresholds) -> Status:
    """`alert` at or above the alert threshold, `warning` at or above the warning one, else (or no score) `ok`."""
    if score is None:
        return "ok"
    if score >= thresholds.alert:
        return "alert"
    if score >= thresholds.warning:
        return "warning"
    return "ok"


def window_bounds(
    start: datetime, end: datetime, width_s: float, interval_s: float, *, max_windows: int = MAX_WINDOWS
) -> list[tuple[datetime, datetime]]:
    """The windows [s, s + width) for s = start, start + interval, ... while s + width <= end (UTC).

    Naive datetimes are taken as UTC. Raises `InvalidInput` for a non-positive width or interval, or when
    more than `max_windows` windows would result.
    """
    if not width_s > 0 or not interval_s > 0:
        raise InvalidInput(
            f"window width ({width_s}s) and interval ({interval_s}s) must be positive: "
            "use durations such as 30s, 10m, 1h, 1d"
        )
    start, end = as_utc(start), as_utc(end)
    # Whole microseconds (datetime's resolution) keep the count exact: 1.0 s in 0.1 s steps is 10 windows
    # in integers, but 9 in floats.
    width_us, interval_us = max(1, round(width_s * 1e6)), max(1, round(interval_s * 1e6))
    span_us = (end - start) // timedelta(microseconds=1)
    if span_us < width_us:
        return []
    count = (span_us - width_us) // interval_us + 1
    if count > max_windows:
        raise InvalidInput(
            f"{start.isoformat()}..{end.isoformat()} holds {count} windows, more than {max_windows}: "
            "shorten the time range or use a longer window interval"
        )
    width = timedelta(microseconds=width_us)
    starts = [start + timedelta(microseconds=k * interval_us) for k in range(count)]
    return [(s, s + width) for s in starts]


@dataclass(frozen=True)
class WindowResult:
    """One window's assay result; `edges`, `expected` and `actual` are kept for the drift chart."""

    window_start: datetime
    window_end: datetime
    score: float | None
    status: Status
    bin_scores: list[float]
    rows: int
    edges: list[float] = field(default_factory=list)
    expected: list[float] = field(default_factory=list)
    actual: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly: ISO 8601 times, plain floats and lists."""
        return {
            "window_start": self.window_start.isoformat(),
            "window_end": self.window_end.isoformat(),
            "score": self.score,
            "status": self.status,
            "bin_scores": list(self.bin_scores),
            "rows": self.rows,
            "edges": list(self.edges),
            "expected": list(self.expected),
            "actual": list(self.actual),
        }


def evaluate_window(
    edges: np.ndarray,
    expected: np.ndarray,
    values: np.ndarray,
    window_start: datetime,
    window_end: datetime,
    spec: AssaySpec,
) -> WindowResult:
    """Score one window's `values` against the baseline's `expected` fractions (binned with `edges`).

    `rows` counts the non-NaN values scored; a window without any has score None and status ok
    (no traffic is not drift).
    """
    data = _as_floats(values, f"{spec.target} values")
    data = data[~np.isnan(data)]
    actual = bin_fractions(data, edges)
    value: float | None = None
    bin_scores: list[float] = []
    if data.size:
        value, bin_scores = score(expected, actual, spec.metric)
    return WindowResult(
        window_start=as_utc(window_start),
        window_end=as_utc(window_end),
        score=value,
        status=status_of(value, spec.thresholds),
        bin_scores=bin_scores,
        rows=int(data.size),
        edges=np.asarray(edges, dtype=np.float64).tolist(),
        expected=np.asarray(expected, dtype=np.float64).tolist(),
        actual=actual.tolist(),
    )


def run_windows(
    spec: AssaySpec,
    baseline_values: np.ndarray,
    bounds: list[tuple[datetime, datetime]],
    values_in: Callable[[datetime, datetime], np.ndarray],
) -> list[WindowResult]:
    """One result per window in `bounds`; `values_in(start, end)` returns the target's values in [start, end).

    The edges and expected fractions come from the baseline once, so every window is binned the same way.
    """
    edges = bin_edges(baseline_values, spec.bins)
    expected = bin_fractions(baseline_values, edges)
    return [evaluate_window(edges, expected, values_in(s, e), s, e, spec) for s, e in bounds]
