"""Demo stage: why was this transaction flagged? An anchor rule and SHAP values, through the whole pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from rich.console import Console

from cluster.explain_view import render
from cluster.sdk import Client
from examples.fraud import FEATURES, LABEL


def explain_flagged(
    console: Console, client: Client, pipeline: str, live: pd.DataFrame, scored: pa.Table, home: Path
) -> dict[str, Any]:
    """Explain a transaction the pipeline flagged (the 20th most likely fraud of the Arrow batch) against
    the logged inputs. Fraud lives in the tails, so the anchor's ranges are cut at the 50/90/95/99th
    percentiles rather than the quartiles, which cannot isolate a 1-in-100 class."""
    probability = np.asarray(scored.column("probabilities").combine_chunks().flatten()).reshape(-1, 2)[:, 1]
    suspect = live[FEATURES].iloc[int(np.argsort(probability)[-20])]
    row = {name: float(value) for name, value in suspect.items()}
    console.print(f"explaining {row} (reference: the inputs logged in the last day)")
    fraud = client.pipeline(pipeline)
    with console.status("starting the explainer (a cold start imports alibi), anchoring the prediction…"):
        anchor = fraud.explain("anchors", row, output=LABEL, percentiles=[50, 90, 95, 99])
    for part in render(anchor):
        console.print(part)
    with console.status("kernel SHAP over the pipeline: scaling, model and threshold included…"):
        shap = fraud.explain("kernel_shap", row)
    for part in render(shap):
        console.print(part)
    chart = home / "fraud-why.png"
    shap.chart(chart)
    console.print(
        f"SHAP chart: {chart} (also `corral explain {pipeline} -m kernel_shap --row '{{...}}' --chart why.png`)"
    )
    return {
        "anchor": anchor.data["anchor"],
        "precision": anchor.data["precision"],
        "top_feature": shap.importances()[0][0],
        "seconds": anchor.meta["elapsed_s"] + shap.meta["elapsed_s"],
        "chart": str(chart),
    }
