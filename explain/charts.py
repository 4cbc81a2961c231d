"""Explanation charts: importance bars (kernel_shap, permutation), ALE/PD curves, an anchor's rule.

Built on `matplotlib.figure.Figure` without pyplot, like `monitoring.charts`: no global figure registry and no
GUI backend, so a server can draw charts from several threads at once (`savefig` renders through Agg).
The `data` keys read here are the ones `explain.explanation` documents per method; `meta` is read with defaults.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

from explain.explanation import Explanation

_BAR_COLOUR, _LINE_COLOUR = "#546e7a", "#1565c0"
_POSITIVE_COLOUR, _NEGATIVE_COLOUR = "#c62828", "#1e88e5"  # SHAP's convention: red raises the output, blue lowers it
_PRECISION_COLOUR, _COVERAGE_COLOUR, _MUTED = "#2e7d32", "#90a4ae", "#616161"
_DOT, _ELLIPSIS, _NBSP = "\u00b7", "\u2026", "\u00a0"  # middle dot, ellipsis, no-break space: the source stays ASCII
MAX_FEATURES = 20  # importance bars; the rest are counted in a "+N more" note
MAX_CURVES = 12  # ALE/PD subplots
MAX_RULES = 10  # anchor rules, one per instance
_MAX_LABEL = 40  # characters of a feature name on an axis
_WRAP = 110  # characters per line of an anchor rule
_RULE_LINES_ONE, _RULE_LINES_EACH = 8, 2  # lines of one rule alone, or of each of several rules, before an ellipsis
_CURVE_TICKS = 4  # at most this many intervals between ticks on an ALE/PD panel
ALE_CATEGORICAL = "categorical: not supported by ALE"
FIGSIZE, DPI = (10.0, 7.0), 100


def _num(x: Any) -> str:
    """A number in 3 significant digits; anything else (None, a list, a label) as its string."""
    if isinstance(x, bool) or not isinstance(x, int | float | np.number):
        return str(x)
    return f"{float(x):.3g}"


def _pct(x: Any) -> str:
    return f"{100 * float(x):.1f} %" if isinstance(x, int | float) and not isinstance(x, bool) else "?"


def _short(label: str, limit: int = _MAX_LABEL) -> str:
    return label if len(label) <= limit else label[: limit - 1] + _ELLIPSIS


def _more(hidden: int, what: str) -> str:
    return f"+{hidden} more {what} not shown"


def _say(ax: Axes, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color=_MUTED)
    ax.set_xticks([])
    ax.set_yticks([])


def chart_title(meta: Mapping[str, Any]) -> str:
    """ "method · pipeline vN", plus " · output" when the explanation names the output it explains."""
    title = f"{meta.get('method', '?')} {_DOT} {meta.get('pipeline', '?')} v{meta.get('version', '?')}"
    output = meta.get("output")
    return f"{title} {_DOT} {output}" if output not in (None, "") else title


def _importance(item: Mapping[str, Any]) -> float:
    value = item.get("importance")
    try:
        number = float(value) if value is not None else -math.inf
    except (TypeError, ValueError):
        return -math.inf
    return number if math.isfinite(number) else -math.inf


def _top(importances: Sequence[Mapping[str, Any]], limit: int) -> tuple[list[Mapping[str, Any]], int]:
    ordered = sorted(importances, key=_importance, reverse=True)  # stable: ties keep the explainer's order
    return ordered[:limit], max(0, len(ordered) - limit)


def ranked(importances: Sequence[Mapping[str, Any]], limit: int = MAX_FEATURES) -> tuple[list[str], list[float], int]:
    """(labels, values, hidden): the `limit` most important features, most important first, and how many were cut.

    Missing or non-finite importances rank last (and show as 0)."""
    top, hidden = _top(importances, limit)
    values = [_importance(item) for item in top]
    return [str(item["feature"]) for item in top], [v if math.isfinite(v) else 0.0 for v in values], hidden


def grid_shape(n: int) -> tuple[int, int]:
    """(rows, cols) of a near-square grid holding `n` subplots, at least one cell; never taller than wide."""
    if n <= 1:
        return 1, 1
    cols = math.ceil(math.sqrt(n))
    return math.ceil(n / cols), cols


def _barh(ax: Axes, labels: list[str], values: list[float], **style: Any) -> None:
    """Horizontal bars, the first label at the top."""
    y = np.arange(len(labels))
    ax.barh(y, values, **style)
    ax.set_yticks(y, [_short(label) for label in labels], fontsize=8)
    ax.set_ylim(len(labels) - 0.5, -0.5)  # inverted: most important at the top
    ax.axvline(0, color=_MUTED, linewidth=0.8)


def _std(item: Mapping[str, Any]) -> float:
    try:
        value = float(item.get("std") or 0.0)
    except (TypeError, ValueError):
        return 0.0
    return value if math.isfinite(value) else 0.0


def _importance_bars(ax: Axes, importances: Sequence[Mapping[str, Any]], xlabel: str, with_std: bool) -> list[str]:
    """The ranked importance bars; returns the labels shown (most important first)."""
    labels, values, hidden = ranked(importances)
    if not labels:
        _say(ax, "no importances")
        return []
    top, _ = _top(importances, MAX_FEATURES)
    errors = [_std(item) for item in top] if with_std else []
    style: dict[str, Any] = {"color": _BAR_COLOUR}
    if any(errors):
        style.update(xerr=errors, error_kw={"ecolor": _MUTED, "capsize": 2, "linewidth": 1})
    _barh(ax, labels, values, **style)
    ax.set_xlabel(f"{xlabel}  ({_more(hidden, 'features')})" if hidden else xlabel)
    return labels


def _kernel_shap(fig: Figure, data: Mapping[str, Any]) -> None:
    shap_values = data["shap_values"]
    expected = _num(data["expected_value"])
    if len(shap_values) != 1:
        ax = fig.subplots()
        _importance_bars(ax, data["importances"], "mean |SHAP value|", with_std=False)
        ax.set_title(f"mean |SHAP| over {len(shap_values)} instances (expected value {expected})")
        return
    left, right = fig.subplots(1, 2)
    labels = _importance_bars(left, data["importances"], "|SHAP value|", with_std=False)
    left.set_title("importance")
    by_feature = dict(zip(data["feature_names"], shap_values[0], strict=False))
    signed = [float(by_feature.get(label, 0.0)) for label in labels]
    predictions = data["predictions"]
    prediction = f", prediction {_num(predictions[0])}" if predictions else ""
    right.set_title(f"SHAP values of the instance\n(expected value {expected}{prediction})", fontsize=10)
    if not labels:
        _say(right, "no SHAP values")
        return
    colours = [_POSITIVE_COLOUR if v >= 0 else _NEGATIVE_COLOUR for v in signed]
    _barh(right, labels, signed, color=colours)
    right.set_xlabel("SHAP value (red raises the output, blue lowers it)")


def _permutation(fig: Figure, data: Mapping[str, Any]) -> None:
    ax = fig.subplots()
    metric = data["metric"]
    _importance_bars(ax, data["importances"], f"change in {metric} when the feature is shuffled", with_std=True)
    ax.set_title(f"baseline {metric} {_num(data['baseline'])} (unshuffled)")


def _is_categorical(values: Sequence[Any]) -> bool:
    return any(isinstance(v, str) for v in values)


def _curve(ax: Axes, name: str, values: Sequence[Any], effects: Sequence[Any], empty_message: str) -> None:
    ax.set_title(_short(name, 30), fontsize=9)
    if len(values) == 0:
        ax.text(0.5, 0.5, empty_message, ha="center", va="center", transform=ax.transAxes, color=_MUTED, fontsize=8)
        ax.set_xticks([])  # y ticks stay: the y axis is shared
        return
    if _is_categorical(values):
        x = np.arange(len(values))
        ax.bar(x, np.asarray(effects, dtype=float), color=_BAR_COLOUR)
        slanted = len(values) > 4 or any(len(str(v)) > 6 for v in values)
        ax.set_xticks(
            x, [_short(str(v), 12) for v in values], rotation=45 if slanted else 0, ha="right" if slanted else "center"
        )
    else:
        ax.plot(np.asarray(values, dtype=float), np.asarray(effects, dtype=float), color=_LINE_COLOUR, linewidth=1.5)
        ax.xaxis.set_major_locator(MaxNLocator(_CURVE_TICKS))  # few ticks: small panels, and ticks cost draw time
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)


def _effects(fig: Figure, data: Mapping[str, Any], method: str) -> None:
    names, values, effects = data["feature_names"], data["values"], data["effects"]
    shown = min(len(names), MAX_CURVES)
    if shown == 0:
        _say(fig.subplots(), "no features")
        return
    rows, cols = grid_shape(shown)
    axes = fig.subplots(rows, cols, sharey=True, squeeze=False)
    empty_message = ALE_CATEGORICAL if method == "ale" else "no values"
    for i, ax in enumerate(axes.flat):
        if i >= shown:
            ax.set_visible(False)
            continue
        _curve(ax, str(names[i]), values[i], effects[i], empty_message)
    axes[0][0].yaxis.set_major_locator(MaxNLocator(_CURVE_TICKS))  # shared by every panel
    for row in axes:
        row[0].set_ylabel("ALE" if method == "ale" else "partial dependence", fontsize=8)
    if len(names) > shown:
        fig.supxlabel(_more(len(names) - shown, "features"), color=_MUTED, fontsize=9)  # laid out, unlike fig.text


def _prediction(prediction: Any) -> str:
    if isinstance(prediction, list | tuple) and len(prediction) == 1:
        prediction = prediction[0]
    return _num(prediction)


def anchor_rule(instance: Mapping[str, Any], unbreakable: bool = False) -> str:
    """ "IF p1 AND p2 THEN prediction = y" for one anchors instance (an empty anchor holds everywhere).

    `unbreakable` joins the words of each predicate with no-break spaces, so that wrapping keeps it on one line."""
    predicates = [str(p).replace(" ", _NBSP) if unbreakable else str(p) for p in instance.get("anchor") or []]
    condition = " AND ".join(predicates) if predicates else "(empty anchor: always)"
    return f"IF {condition} THEN prediction = {_prediction(instance.get('prediction'))}"


def _anchor_instances(data: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    instances = data.get("instances") or []
    return list(instances) if instances else [data]


def _anchors(fig: Figure, data: Mapping[str, Any]) -> None:
    instances = _anchor_instances(data)
    shown = instances[:MAX_RULES]
    several = len(instances) > 1
    lines: list[str] = []
    for i, instance in enumerate(shown):
        prefix = f"#{i + 1}  " if several else ""
        rule = textwrap.wrap(
            prefix + anchor_rule(instance, unbreakable=True),
            _WRAP,
            subsequent_indent="      ",
            max_lines=_RULE_LINES_EACH if several else _RULE_LINES_ONE,
            placeholder=f" {_ELLIPSIS}",
        )
        scores = f"precision {_pct(instance.get('precision'))}, coverage {_pct(instance.get('coverage'))}"
        lines += [*rule, f"      {scores}"]
    if len(instances) > MAX_RULES:
        lines.append(_more(len(instances) - MAX_RULES, "instances"))
    text_share = min(4.0, max(1.0, len(lines) / 6))  # of the height, against 2 for the bars
    text_ax, bar_ax = fig.subplots(2, 1, height_ratios=[text_share, 2])
    text_ax.set_axis_off()
    fontsize = 10 if len(lines) <= 12 else 8
    text_ax.text(0.0, 1.0, "\n".join(lines), ha="left", va="top", transform=text_ax.transAxes, fontsize=fontsize)
    _precision_coverage(bar_ax, shown)


def _fraction(x: Any) -> float:
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) else 0.0


def _precision_coverage(ax: Axes, instances: Sequence[Mapping[str, Any]]) -> None:
    precision = [_fraction(i.get("precision")) for i in instances]
    coverage = [_fraction(i.get("coverage")) for i in instances]
    if len(instances) == 1:
        bars = ax.bar([0, 1], [precision[0], coverage[0]], color=[_PRECISION_COLOUR, _COVERAGE_COLOUR], width=0.5)
        ax.bar_label(bars, labels=[_pct(precision[0]), _pct(coverage[0])], padding=2)
        ax.set_xticks([0, 1], ["precision", "coverage"])
        ax.set_xlim(-1, 2)
    else:
        x = np.arange(len(instances))
        ax.bar(x - 0.2, precision, width=0.4, color=_PRECISION_COLOUR, label="precision")
        ax.bar(x + 0.2, coverage, width=0.4, color=_COVERAGE_COLOUR, label="coverage")
        ax.set_xticks(x, [f"#{i + 1}" for i in x])
        ax.legend(loc="upper right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1))


_DRAW: dict[str, Callable[[Figure, Mapping[str, Any]], None]] = {
    "kernel_shap": _kernel_shap,
    "permutation": _permutation,
    "ale": lambda fig, data: _effects(fig, data, "ale"),
    "pd": lambda fig, data: _effects(fig, data, "pd"),
    "anchors": _anchors,
}


def explanation_figure(explanation: Explanation) -> Figure:
    """The chart of an explanation as a pyplot-free `Figure` (ValueError for a method without a chart)."""
    method = explanation.meta.get("method")
    draw = _DRAW.get(str(method))
    if draw is None:
        raise ValueError(f"no chart for explanation method {method!r}: expected one of {', '.join(_DRAW)}")
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    fig.suptitle(chart_title(explanation.meta))
    draw(fig, explanation.data)
    return fig


def explanation_chart(explanation: Explanation) -> bytes:
    """A PNG chart: importance bars, ALE/PD curves per feature, or the anchor's rule with precision and coverage."""
    buffer = io.BytesIO()
    explanation_figure(explanation).savefig(buffer, format="png")
    return buffer.getvalue()
