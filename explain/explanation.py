"""The result of an explanation: `{"meta": ..., "data": ...}`, plain JSON, never a raw alibi object.

`data` by method (keys of the public contract first, Corral's additions after):

* `anchors`: `anchor` (predicate strings such as "f3 > 0.12"), `precision`, `coverage`, `prediction`
  describe the first instance; `instances` holds the same four keys for every instance asked about.
* `kernel_shap`: `feature_names`, `shap_values` (per instance, per feature, for the target output),
  `expected_value`, `importances` (`[{"feature", "importance"}]` by mean |SHAP|, most important
  first), `predictions` (the target output of each explained row).
* `permutation`: `feature_names`, `importances` (`[{"feature", "importance", "std"}]`, ranked: the
  drop in score, or rise in loss, when the feature is shuffled), `metric`, `baseline` (the unshuffled score).
* `ale` / `pd`: `feature_names`, `values` (per feature, the grid: numbers, or category names for a
  categorical feature under `pd`) and `effects` (per feature, the effect at each grid value);
  `ale` leaves categorical features out (empty lists) and says so in `meta.skipped`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

LOCAL_METHODS = ("anchors", "kernel_shap")
GLOBAL_METHODS = ("kernel_shap", "permutation", "ale", "pd")
METHODS = ("anchors", "kernel_shap", "permutation", "ale", "pd")


class Explanation(BaseModel):
    """An explanation with its provenance (`meta`: method, params, pipeline, version, reference...)
    apart from its content (`data`, whose keys depend on the method)."""

    model_config = ConfigDict(extra="forbid")

    meta: dict[str, Any]
    data: dict[str, Any]

    @property
    def method(self) -> str:
        return str(self.meta["method"])

    def importances(self) -> list[tuple[str, float]]:
        """(feature, importance) most important first, for the methods that rank features."""
        return [(item["feature"], float(item["importance"])) for item in self.data.get("importances", [])]

    def chart(self, path: str | Path | None = None) -> bytes:
        """A PNG chart (importance bars, ALE/PD curves, or the anchor's rule with its precision),
        also written to `path` if given."""
        from explain.charts import explanation_chart

        png = explanation_chart(self)
        if path is not None:
            Path(path).write_bytes(png)
        return png
