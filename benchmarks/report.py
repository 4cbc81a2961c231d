"""The side-by-side table: workload | metric | peer | corral | ratio (corral / peer)."""

from __future__ import annotations

import math
from typing import Any

METRICS = (("req_per_s", "req/s"), ("rows_per_s", "rows/s"), ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"))


def ratios(peer: dict[str, Any], corral: dict[str, Any] | None) -> dict[str, float | None]:
    """corral / peer for each metric (None without Corral or with a zero peer figure)."""
    out: dict[str, float | None] = {}
    for key, _ in METRICS:
        p = peer.get(key)
        c = corral.get(key) if corral else None
        if p is None or c is None or not p > 0 or math.isnan(c):
            out[key] = None
        else:
            out[key] = c / p
    return out


def _fmt(value: float | None, key: str) -> str:
    if value is None or math.isnan(value):
        return "-"
    if key.endswith("_ms"):
        return f"{value:.2f}"
    return f"{value:,.0f}"


def table(results: list[dict[str, Any]]) -> str:
    """Plain-text table of the workload results, errors appended per system."""
    width = max(len(r["workload"]) for r in results)
    lines = [f"{'workload':<{width}}  {'metric':<7} {'peer':>12} {'corral':>12} {'ratio':>7}"]
    for r in results:
        for i, (key, label) in enumerate(METRICS):
            name = r["workload"] if i == 0 else ""
            peer, corral, ratio = r["peer"].get(key), (r["corral"] or {}).get(key), r["ratio"][key]
            lines.append(
                f"{name:<{width}}  {label:<7} {_fmt(peer, key):>12} {_fmt(corral, key):>12} "
                f"{'-' if ratio is None else f'{ratio:.2f}x':>7}"
            )
        for system in ("peer", "corral"):
            res = r[system]
            if res and (res["errors"] or res.get("check", "ok") != "ok"):
                lines.append(
                    f"{'':<{width}}  ! {system}: {res['errors']} errors ({res.get('first_error')}); "
                    f"reply check: {res.get('check')}"
                )
    return "\n".join(lines)
