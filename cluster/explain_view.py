"""How the CLI shows an explanation: a sentence for anchors, ranked tables for the rest."""

from __future__ import annotations

import json
from typing import Any

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from explain.explanation import Explanation

MAX_ROWS = 20


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """`key=value` pairs; values are read as JSON when they parse (numbers, lists), else as strings."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--param {pair!r} is not key=value: e.g. --param threshold=0.9")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


def parse_row(row: str) -> dict[str, Any]:
    """`--row '{json}'`: one record."""
    try:
        record = json.loads(row)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--row is not JSON ({exc.msg}): quote it, e.g. --row '{{\"f1\": 0.5}}'") from None
    if not isinstance(record, dict):
        raise ValueError('--row takes one JSON object: {"column": value, ...}')
    return record


def render(explanation: Explanation) -> list[RenderableType]:
    meta, data = explanation.meta, explanation.data
    where = (
        f"{meta.get('pipeline')} v{meta.get('version')} ({meta.get('variant')}), output {meta.get('output')}, "
        f"reference: {_reference(meta.get('reference', {}))}"
    )
    footer = Text(
        f"{meta.get('elapsed_s', 0):.2f} s, {meta.get('predict_calls', 0)} predict calls, "
        f"{meta.get('rows_predicted', 0):,} rows predicted"
        + (", fitted explainer reused" if meta.get("fitted_from_cache") else ""),
        style="dim",
    )
    method = explanation.method
    if method == "anchors":
        threshold = float(meta.get("params", {}).get("threshold", 0.95))
        body: list[RenderableType] = [_anchor(item, threshold) for item in data["instances"]]
    elif method in ("kernel_shap", "permutation"):
        body = [_importances(explanation)]
    else:
        body = [_effects(explanation)]
    return [Text(f"{method}: {where}", style="bold"), *body, footer]


def _reference(reference: dict[str, Any]) -> str:
    source = reference.get("source", "?")
    detail = reference.get("dataset") or (
        f"{reference.get('start', '')[:19]} to {reference.get('end', '')[:19]}" if source == "logs" else ""
    )
    dropped = reference.get("columns_dropped")
    left_out = f"; left out {', '.join(dropped)}: not every request sent it" if dropped else ""
    return f"{source} {detail} ({reference.get('rows', '?')} rows{left_out})".replace("  ", " ")


def _anchor(item: dict[str, Any], threshold: float) -> Text:
    rule = " AND ".join(item["anchor"]) or "(any row: the prediction holds without conditions)"
    if item["precision"] < threshold:
        return Text.assemble(
            ("no rule reached ", "yellow"),
            (f"{threshold:.0%} precision", "yellow"),
            f"; the best found: IF {rule} THEN prediction = {item['prediction']} holds for "
            f"{item['precision']:.0%} of similar rows (the prediction is near a boundary: try kernel_shap, "
            "or --param threshold=0.8)",
        )
    return Text.assemble(
        ("IF ", "bold"),
        (rule, "cyan"),
        (" THEN ", "bold"),
        (f"prediction = {item['prediction']}", "green"),
        f"   precision {item['precision']:.0%}, coverage {_share(item['coverage'])}",
    )


def _share(fraction: float) -> str:
    """A percentage that keeps small shares visible: 0.07% rather than 0%."""
    return f"{fraction:.0%}" if fraction >= 0.01 or fraction == 0 else f"{fraction * 100:.2g}%"


def _importances(explanation: Explanation) -> Table:
    data = explanation.data
    table = Table("rank", "feature", "importance", title="feature importance (most important first)")
    with_std = explanation.method == "permutation"
    if with_std:
        table.add_column("std")
    for rank, item in enumerate(data["importances"][:MAX_ROWS], start=1):
        cells = [str(rank), item["feature"], f"{item['importance']:.4g}"]
        table.add_row(*cells, *([f"{item.get('std', 0):.2g}"] if with_std else []))
    if explanation.method == "kernel_shap":
        table.caption = f"mean |SHAP| over {len(data['shap_values'])} rows; expected value {data['expected_value']:.4g}"
    else:
        table.caption = f"{data['metric']} drop when shuffled; baseline {data['baseline']:.4g}"
    return table


def _effects(explanation: Explanation) -> Table:
    data = explanation.data
    skipped = explanation.meta.get("skipped", {})
    table = Table("feature", "grid", "effect from", "effect to", "range", title=f"{explanation.method} effects")
    for name, values, effects in zip(data["feature_names"], data["values"], data["effects"], strict=True):
        if not effects:
            table.add_row(name, "-", "-", "-", skipped.get(name, "not computed"))
            continue
        grid = f"{values[0]:.4g} .. {values[-1]:.4g}" if not isinstance(values[0], str) else ", ".join(values[:4])
        table.add_row(name, grid, f"{effects[0]:.4g}", f"{effects[-1]:.4g}", f"{max(effects) - min(effects):.4g}")
    return table
