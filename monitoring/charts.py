"""Drift chart: the baseline against the latest window, and the score of every window over time.

Built on `matplotlib.figure.Figure` without pyplot: no global figure registry and no GUI backend, so a server
can draw charts from several threads at once (`savefig` renders through Agg).
"""

from __future__ import annotations

import io
from itertools import pairwise

import numpy as np
from matplotlib.axes import Axes
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter, date2num
from matplotlib.figure import Figure

from monitoring.assay_spec import AssaySpec
from monitoring.assays import WindowResult

STATUS_COLOURS = {"ok": "#2e7d32", "warning": "#f9a825", "alert": "#c62828"}
_BASELINE_COLOUR, _WINDOW_COLOUR, _MUTED = "#90a4ae", "#1565c0", "#616161"
_DASH = "\u2013"  # en dash, escaped so the source stays ASCII
_MAX_BIN_LABELS = 24  # more would overlap: label every n-th bin instead
FIGSIZE, DPI = (9.0, 7.0), 100


def _num(x: float) -> str:
    return f"{x:.3g}"


def bin_labels(edges: list[float]) -> list[str]:
    """Labels of the `len(edges) + 1` bins: "< e0", "e0-e1" (en dash), ..., "> ek" ("= c" for a constant baseline)."""
    if not edges:
        return []
    interior = [f"= {_num(lo)}" if lo == hi else f"{_num(lo)}{_DASH}{_num(hi)}" for lo, hi in pairwise(edges)]
    return [f"< {_num(edges[0])}", *interior, f"> {_num(edges[-1])}"]


def _span(result: WindowResult) -> str:
    start, end = result.window_start, result.window_end
    if start.date() == end.date():
        return f"{start:%Y-%m-%d %H:%M}{_DASH}{end:%H:%M} UTC"
    return f"{start:%Y-%m-%d %H:%M} {_DASH} {end:%Y-%m-%d %H:%M} UTC"


def _say(ax: Axes, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color=_MUTED)
    ax.set_xticks([])
    ax.set_yticks([])


def _histogram(ax: Axes, results: list[WindowResult]) -> None:
    # The latest window with data: an empty latest window would only show zero bars against the baseline.
    latest = next((r for r in reversed(results) if r.rows > 0), None)
    shown = latest or results[-1]
    labels = bin_labels(shown.edges)
    if not labels:
        _say(ax, "no bins")
        return
    x = np.arange(len(labels))
    ax.bar(x - 0.2, shown.expected, width=0.4, color=_BASELINE_COLOUR, label="baseline")
    if latest is None:
        ax.set_title("baseline (no window has data yet)")
    else:
        ax.bar(x + 0.2, latest.actual, width=0.4, color=_WINDOW_COLOUR, label="latest window")
        ax.set_title(f"baseline vs window {_span(latest)} ({latest.rows} rows, {latest.status})")
    step = max(1, -(-len(labels) // _MAX_BIN_LABELS))
    slanted = len(labels) > 7  # long labels side by side would overlap
    ax.set_xticks(
        x[::step], labels[::step], rotation=45 if slanted else 0, ha="right" if slanted else "center", fontsize=8
    )
    ax.set_ylabel("fraction of values")
    ax.legend(loc="upper right", fontsize=8)


def _scores(ax: Axes, results: list[WindowResult], spec: AssaySpec) -> None:
    scored = [r for r in results if r.score is not None]
    warning, alert = spec.thresholds.warning, spec.thresholds.alert
    ax.axhline(warning, color=STATUS_COLOURS["warning"], linestyle="--", linewidth=1, label=f"warning {warning:g}")
    ax.axhline(alert, color=STATUS_COLOURS["alert"], linestyle="--", linewidth=1, label=f"alert {alert:g}")
    ax.set_ylabel(spec.metric)
    ax.set_title(f"{spec.metric} per window")
    if not scored:
        ax.text(0.5, 0.5, "no window has data yet", ha="center", va="center", transform=ax.transAxes, color=_MUTED)
    else:
        times = date2num([r.window_start for r in scored])
        values = [float(r.score) for r in scored if r.score is not None]
        ax.plot(times, values, color=_MUTED, linewidth=1, zorder=1)
        ax.scatter(times, values, c=[STATUS_COLOURS[r.status] for r in scored], s=24, zorder=2)
        locator = AutoDateLocator()
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    top = max([alert, *(float(r.score) for r in scored if r.score is not None)])
    ax.set_ylim(0, top * 1.15 if top > 0 else 1)
    ax.legend(loc="upper left", fontsize=8)


def drift_chart_png(results: list[WindowResult], spec: AssaySpec) -> bytes:
    """A PNG of the baseline vs the latest window's bin fractions (top) and the score per window (bottom)."""
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    top, bottom = fig.subplots(2, 1, height_ratios=[1, 1])
    fig.suptitle(f"drift of {spec.target} in {spec.pipeline}")
    if results:
        _histogram(top, results)
        _scores(bottom, results, spec)
    else:
        _say(top, "no windows yet")
        _say(bottom, "no windows yet")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
