from __future__ import annotations

import struct
from typing import Any

import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.text import Text

from explain.charts import (
    ALE_CATEGORICAL,
    DPI,
    FIGSIZE,
    MAX_CURVES,
    MAX_FEATURES,
    anchor_rule,
    chart_title,
    explanation_chart,
    explanation_figure,
    grid_shape,
    ranked,
)
from explain.explanation import Explanation

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
META = {"pipeline": "fraud", "version": 3}


def explanation(method: str, data: dict[str, Any], **meta: Any) -> Explanation:
    return Explanation(meta={"method": method, **META, **meta}, data=data)


def check_png(data: bytes) -> None:
    assert data.startswith(PNG_SIGNATURE)
    assert data[12:16] == b"IHDR"
    assert struct.unpack(">II", data[16:24]) == (round(FIGSIZE[0] * DPI), round(FIGSIZE[1] * DPI))
    assert data.endswith(b"IEND\xaeB`\x82")


def texts(fig: Figure) -> list[str]:
    return [t.get_text() for t in fig.findobj(Text) if t.get_text()]


def rule_text(fig: Figure) -> str:
    """The text of an anchors chart, its no-break spaces (which keep a predicate on one line) made plain."""
    return fig.axes[0].texts[0].get_text().replace("\u00a0", " ")


def visible_axes(fig: Figure) -> list[Axes]:
    return [ax for ax in fig.axes if ax.get_visible()]


def bars(ax: Axes) -> list[Rectangle]:
    return [p for p in ax.patches if isinstance(p, Rectangle)]


def shap_data(n_features: int, n_instances: int) -> dict[str, Any]:
    names = [f"f{i}" for i in range(n_features)]
    rows = [[(-1) ** j * (j + 1) * 0.1 * (i + 1) for j in range(n_features)] for i in range(n_instances)]
    mean_abs = [sum(abs(r[j]) for r in rows) / n_instances for j in range(n_features)]
    order = sorted(range(n_features), key=lambda j: -mean_abs[j])
    return {
        "feature_names": names,
        "shap_values": rows,
        "expected_value": 0.25,
        "importances": [{"feature": names[j], "importance": mean_abs[j]} for j in order],
        "predictions": [0.9] * n_instances,
    }


def permutation_data(n_features: int, with_std: bool = True) -> dict[str, Any]:
    importances = [
        {"feature": f"f{i}", "importance": 0.5 / (i + 1), **({"std": 0.01 * (i + 1)} if with_std else {})}
        for i in range(n_features)
    ]
    names = [f"f{i}" for i in range(n_features)]
    return {"feature_names": names, "importances": importances, "metric": "accuracy", "baseline": 0.93}


def effects_data(names: list[str], values: list[list[Any]]) -> dict[str, Any]:
    return {"feature_names": names, "values": values, "effects": [[0.1 * k for k in range(len(v))] for v in values]}


def anchor(predicates: list[str], precision: float = 0.95, coverage: float = 0.12) -> dict[str, Any]:
    return {"anchor": predicates, "precision": precision, "coverage": coverage, "prediction": 1}


# --- pure helpers ---


def test_ranked_orders_most_important_first_and_counts_the_cut() -> None:
    items = [
        {"feature": "a", "importance": 0.1},
        {"feature": "b", "importance": 0.7},
        {"feature": "c", "importance": 0.3},
    ]
    assert ranked(items, 2) == (["b", "c"], [0.7, 0.3], 1)
    assert ranked(items) == (["b", "c", "a"], [0.7, 0.3, 0.1], 0)
    assert ranked([]) == ([], [], 0)


def test_ranked_puts_negative_and_missing_importances_last() -> None:
    items: list[dict[str, Any]] = [
        {"feature": "neg", "importance": -0.2},
        {"feature": "nan", "importance": float("nan")},
        {"feature": "none", "importance": None},
        {"feature": "pos", "importance": 0.05},
    ]
    labels, values, hidden = ranked(items)
    assert labels == ["pos", "neg", "nan", "none"]
    assert values == [0.05, -0.2, 0.0, 0.0]
    assert hidden == 0


@pytest.mark.parametrize(
    ("n", "shape"),
    [(0, (1, 1)), (1, (1, 1)), (2, (1, 2)), (3, (2, 2)), (4, (2, 2)), (5, (2, 3)), (7, (3, 3)), (12, (3, 4))],
)
def test_grid_shape(n: int, shape: tuple[int, int]) -> None:
    assert grid_shape(n) == shape


@pytest.mark.parametrize("n", range(1, MAX_CURVES + 1))
def test_grid_shape_holds_n_with_less_than_a_row_spare(n: int) -> None:
    rows, cols = grid_shape(n)
    assert rows <= cols
    assert rows * cols >= n > (rows - 1) * cols


def test_chart_title() -> None:
    assert chart_title({"method": "ale", "pipeline": "fraud", "version": 3}) == "ale \u00b7 fraud v3"
    assert chart_title({"method": "pd", "output": "probability"}) == "pd \u00b7 ? v? \u00b7 probability"
    assert chart_title({}) == "? \u00b7 ? v?"


def test_anchor_rule() -> None:
    assert anchor_rule(anchor(["f3 > 0.12", "f1 <= 2"])) == "IF f3 > 0.12 AND f1 <= 2 THEN prediction = 1"
    assert anchor_rule({**anchor([]), "prediction": [0]}) == "IF (empty anchor: always) THEN prediction = 0"


# --- charts ---
# Rendering costs a few tenths of a second per chart: one PNG per kind of chart; the rest inspect the Figure.

RENDERED = {
    "kernel_shap, one instance": explanation("kernel_shap", shap_data(5, 1), output="probability"),
    "permutation, with std": explanation("permutation", permutation_data(4)),
    "ale, with a skipped feature": explanation(
        "ale", effects_data(["age", "income", "country"], [[1, 2, 3], [0.0, 10.0], []]), skipped=["country"]
    ),
    "pd, with a categorical feature": explanation("pd", effects_data(["age", "country"], [[1.0, 2.0], ["fr", "de"]])),
    "anchors, several instances": explanation(
        "anchors", {**anchor(["f1 > 2"]), "instances": [anchor(["f1 > 2"]), anchor([]), anchor(["f2 <= 0.5"] * 9)]}
    ),
}


@pytest.mark.parametrize("exp", RENDERED.values(), ids=RENDERED.keys())
def test_renders_a_png(exp: Explanation) -> None:
    check_png(explanation_chart(exp))


def test_unknown_method_raises_value_error() -> None:
    with pytest.raises(ValueError, match="no chart for explanation method 'lime'"):
        explanation_chart(explanation("lime", {}))
    with pytest.raises(ValueError, match="None"):
        explanation_chart(Explanation(meta={}, data={}))


def test_kernel_shap_one_instance_shows_signed_values() -> None:
    exp = explanation("kernel_shap", shap_data(5, 1), output="probability")
    fig = explanation_figure(exp)
    importance_ax, signed_ax = fig.axes
    assert [t.get_text() for t in importance_ax.get_yticklabels()] == ["f4", "f3", "f2", "f1", "f0"]
    assert importance_ax.get_ylim()[0] > importance_ax.get_ylim()[1]  # inverted: first label at the top
    signed = [bar.get_width() for bar in bars(signed_ax)]
    assert signed == pytest.approx([0.5, -0.4, 0.3, -0.2, 0.1])  # f4..f0, sign kept
    colours = {p.get_facecolor() for p in signed_ax.patches}
    assert len(colours) == 2
    assert "expected value 0.25" in signed_ax.get_title()
    assert fig.get_suptitle() == "kernel_shap \u00b7 fraud v3 \u00b7 probability"


def test_kernel_shap_several_instances_shows_only_importances() -> None:
    exp = explanation("kernel_shap", shap_data(4, 3))
    fig = explanation_figure(exp)
    assert len(fig.axes) == 1
    assert "over 3 instances" in fig.axes[0].get_title()


def test_importances_beyond_the_limit_say_how_many_more() -> None:
    exp = explanation("permutation", permutation_data(MAX_FEATURES + 5))
    (ax,) = explanation_figure(exp).axes
    assert len(ax.get_yticklabels()) == MAX_FEATURES
    assert "+5 more features not shown" in ax.get_xlabel()
    at_limit = explanation_figure(explanation("permutation", permutation_data(MAX_FEATURES))).axes[0]
    assert "more" not in at_limit.get_xlabel()


def test_permutation_draws_error_bars_only_with_std() -> None:
    with_std = explanation_figure(explanation("permutation", permutation_data(3))).axes[0]
    without = explanation_figure(explanation("permutation", permutation_data(3, with_std=False))).axes[0]
    assert with_std.lines or with_std.collections  # error bars
    assert not without.collections
    assert "baseline accuracy 0.93" in with_std.get_title()


def test_importances_empty() -> None:
    exp = explanation("permutation", {**permutation_data(0), "importances": []})
    assert "no importances" in texts(explanation_figure(exp))


@pytest.mark.parametrize("method", ["ale", "pd"])
def test_one_subplot_per_feature(method: str) -> None:
    names = ["age", "income", "score"]
    exp = explanation(method, effects_data(names, [[1, 2, 3], [0.0, 10.0], [5, 6, 7, 8]]))
    fig = explanation_figure(exp)
    axes = visible_axes(fig)
    assert [ax.get_title() for ax in axes] == names
    assert all(len(ax.lines) == 1 for ax in axes)
    assert len(fig.axes) == 4  # a 2 x 2 grid, the spare cell hidden


def test_ale_skipped_categorical_feature_says_so() -> None:
    exp = explanation("ale", effects_data(["age", "country"], [[1, 2, 3], []]), skipped=["country"])
    fig = explanation_figure(exp)
    age, country = visible_axes(fig)
    assert not country.lines
    assert ALE_CATEGORICAL in [t.get_text() for t in country.texts]
    assert age.get_shared_y_axes().joined(age, country)


def test_pd_categorical_feature_is_drawn_as_bars() -> None:
    exp = explanation("pd", effects_data(["age", "country"], [[1.0, 2.0], ["fr", "de", "us"]]))
    _, country = visible_axes(explanation_figure(exp))
    assert len(country.patches) == 3
    assert [t.get_text() for t in country.get_xticklabels()] == ["fr", "de", "us"]


def test_more_than_twelve_curves_are_cut_with_a_note() -> None:
    names = [f"f{i}" for i in range(MAX_CURVES + 3)]
    exp = explanation("pd", effects_data(names, [[0, 1]] * len(names)))
    fig = explanation_figure(exp)
    assert len(visible_axes(fig)) == MAX_CURVES
    assert "+3 more features not shown" in texts(fig)


def test_anchors_single_instance() -> None:
    first = anchor(["f3 > 0.12", "f1 <= 2"], precision=0.953, coverage=0.1234)
    exp = explanation("anchors", {**first, "instances": [first]})
    fig = explanation_figure(exp)
    text_ax, bar_ax = fig.axes
    assert len(text_ax.texts) == 1
    text = rule_text(fig)
    assert "IF f3 > 0.12 AND f1 <= 2 THEN prediction = 1" in text
    assert "precision 95.3 %, coverage 12.3 %" in text
    assert [bar.get_height() for bar in bars(bar_ax)] == pytest.approx([0.953, 0.1234])
    assert bar_ax.get_ylim() == (0, 1.05)


def test_anchors_one_rule_per_instance_capped_at_ten() -> None:
    instances = [anchor([f"f{i} > {i}"]) for i in range(12)]
    exp = explanation("anchors", {**instances[0], "instances": instances})
    fig = explanation_figure(exp)
    text, bar_ax = rule_text(fig), fig.axes[1]
    assert text.count("IF ") == 10
    assert "#10  IF f9 > 9" in text and "f10 > 10" not in text
    assert "+2 more instances not shown" in text
    assert len(bar_ax.patches) == 20  # precision and coverage per shown instance


def test_anchors_empty_anchor_and_long_rule() -> None:
    long = anchor([f"a_rather_long_feature_name_{i} > {i}.5" for i in range(8)])
    exp = explanation("anchors", {**long, "instances": [anchor([]), long]})
    text = rule_text(explanation_figure(exp))
    assert "(empty anchor: always)" in text
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 110
    assert len(lines) == 1 + 1 + 2 + 1  # each of several rules is cut at two lines, with an ellipsis
    assert lines[3].endswith("\u2026")
    assert all(line.removesuffix(" \u2026").endswith(".5 AND") for line in lines[2:4])  # predicates kept whole
