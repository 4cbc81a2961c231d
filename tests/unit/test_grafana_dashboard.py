"""The Grafana dashboard only charts metrics Corral defines (names as Ray exports them)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from monitoring.metrics import ALL

DASHBOARD = Path(__file__).resolve().parents[2] / "monitoring" / "grafana" / "corral-dashboard.json"


def test_every_panel_queries_defined_metrics_and_every_metric_has_a_panel() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {m for expr in exprs for m in re.findall(r"ray_(corral_[a-z_]+?)(?:_total|_bucket|_count|_sum)?\b", expr)}
    defined = {m.name for m in ALL}
    assert used <= defined, used - defined
    assert defined <= used, defined - used
