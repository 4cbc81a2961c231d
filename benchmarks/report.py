"""The side-by-side tables: one column per system, each figure with its ratio to the peer's.

`table()` is the plain-text version printed after a run, `markdown()` the same figures for the
README. Workload entries are those benchmarks.core writes: `results[system]` holds a system's
figures (None if it was not measured) and `ratio[system]` its figures divided by the peer's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

BASELINE = "peer"
# (key, label); the ratio of each is system / peer, so for latency and CPU lower is better.
METRICS = (
    ("req_per_s", "req/s"),
    ("rows_per_s", "rows/s"),
    ("p50_ms", "p50 ms"),
    ("p99_ms", "p99 ms"),
    ("cpu_pct", "CPU %"),
    ("req_per_cpu_s", "req/CPU-s"),
)
# Corral's own per-request cost: the same steps in Ray Serve with and without Corral around them.
OVERHEAD_PAIR = ("corral-auto", "bare-serve")


def _ratio(value: Any, base: Any) -> float | None:
    if value is None or base is None or not base > 0 or math.isnan(value):
        return None
    return float(value / base)


def ratios(results: dict[str, dict[str, Any] | None], baseline: str = BASELINE) -> dict[str, dict[str, float | None]]:
    """Each system's figures divided by the baseline's, per metric (None where either is missing)."""
    base = results.get(baseline) or {}
    return {
        name: {key: _ratio((res or {}).get(key), base.get(key)) for key, _ in METRICS}
        for name, res in results.items()
        if name != baseline
    }


def overhead(entry: dict[str, Any]) -> float | None:
    """corral-auto / bare-serve requests per second for one workload."""
    corral, bare = (entry["results"].get(name) or {} for name in OVERHEAD_PAIR)
    return _ratio(corral.get("req_per_s"), bare.get("req_per_s"))


def _fmt(value: float | None, key: str) -> str:
    if value is None or math.isnan(value):
        return "-"
    if key.endswith("_ms"):
        return f"{value:.2f}"
    if key == "cpu_pct":
        return f"{value:.0f}"
    return f"{value:,.0f}"


def _cell(entry: dict[str, Any], system: str, key: str) -> str:
    value = (entry["results"].get(system) or {}).get(key)
    text = _fmt(value, key)
    ratio = entry.get("ratio", {}).get(system, {}).get(key)
    return text if ratio is None else f"{text} ({ratio:.2f}x)"


def grid(workloads: list[dict[str, Any]], systems: Sequence[str]) -> list[list[str]]:
    """Header row, then one row per workload and metric: workload | metric | one cell per system."""
    rows = [["workload", "metric", *systems]]
    for entry in workloads:
        for i, (key, label) in enumerate(METRICS):
            rows.append([entry["workload"] if i == 0 else "", label, *(_cell(entry, s, key) for s in systems)])
    return rows


def problems(workloads: list[dict[str, Any]], systems: Sequence[str]) -> list[str]:
    """One line per system and workload with errors or a reply that differs from the model's."""
    lines = []
    for entry in workloads:
        for system in systems:
            res = entry["results"].get(system)
            if res and (res["errors"] or res.get("check", "ok") != "ok"):
                lines.append(
                    f"{entry['workload']}: {system}: {res['errors']} errors ({res.get('first_error')}); "
                    f"reply check: {res.get('check')}"
                )
    return lines


def overhead_line(workloads: list[dict[str, Any]]) -> str | None:
    """'Corral overhead vs bare Serve' for the workloads where both were measured, else None."""
    parts = [f"{e['workload']} {r:.2f}x" for e in workloads if (r := overhead(e)) is not None]
    if not parts:
        return None
    return "Corral overhead vs bare Serve (corral-auto / bare-serve req/s): " + ", ".join(parts)


def table(workloads: list[dict[str, Any]], systems: Sequence[str]) -> str:
    """Plain-text table of the workload results, then problems and the overhead line."""
    rows = grid(workloads, systems)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [f"{row[0]:<{widths[0]}}", f"{row[1]:<{widths[1]}}"]
        cells += [f"{cell:>{width}}" for cell, width in zip(row[2:], widths[2:], strict=True)]
        lines.append("  ".join(cells))
    lines += [f"! {line}" for line in problems(workloads, systems)]
    if (line := overhead_line(workloads)) is not None:
        lines.append(line)
    return "\n".join(lines)


def memory_table(idle: dict[str, dict[str, Any] | None], loaded: dict[str, dict[str, Any] | None]) -> str:
    """Plain text: system | replica processes and their RSS once deployed, and after the load."""
    lines = [f"{'memory':<12} {'replicas':>8} {'idle MB':>8} {'replicas':>8} {'loaded MB':>9}"]
    for system in idle.keys() | loaded.keys():
        first, last = idle.get(system), loaded.get(system)
        if first or last:
            a = (first["replicas"], f"{first['rss_mb']:,.0f}") if first else ("-", "-")
            b = (last["replicas"], f"{last['rss_mb']:,.0f}") if last else ("-", "-")
            lines.append(f"{system:<12} {a[0]:>8} {a[1]:>8} {b[0]:>8} {b[1]:>9}")
    return "\n".join(lines)


def markdown(results: dict[str, Any]) -> str:
    """The run as markdown: when and where, the table, problems, overhead and memory."""
    systems = results["settings"]["systems"]
    machine = results["machine"]
    settings = results["settings"]
    out = [
        f"Run {results['started']}: {machine['cpus']} CPUs, load average at start "
        f"{machine['loadavg_start'][0]:.1f}, client {settings['client']}, {settings['seconds']:g} s per "
        f"workload and system. Cells: figure (ratio to the peer; for latency and CPU lower is better).",
        "",
    ]
    rows = grid(results["workloads"], systems)
    out.append("| " + " | ".join(rows[0]) + " |")
    out.append("|" + "---|" * 2 + "---:|" * len(systems))
    out += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    out.append("")
    if (line := overhead_line(results["workloads"])) is not None:
        out += [line + ".", ""]
    idle = {name: info.get("memory_idle") for name, info in results["systems"].items()}
    memory = {name: info.get("memory") for name, info in results["systems"].items()}
    if any(memory.values()):
        out += [
            "| memory (RSS) | replicas deployed | MB deployed | replicas after load | MB after load |",
            "|---|---:|---:|---:|---:|",
        ]
        for name, m in memory.items():
            i = idle.get(name)
            first = f"{i['replicas']} | {i['rss_mb']:,.0f}" if i else "- | -"
            last = f"{m['replicas']} | {m['rss_mb']:,.0f}" if m else "- | -"
            out.append(f"| {name} | {first} | {last} |")
        out.append("")
    failed = [f"* {name}: {info['error']}" for name, info in results["systems"].items() if info.get("error")]
    issues = [f"* {line}" for line in problems(results["workloads"], systems)]
    if failed or issues:
        out += ["Problems:", "", *failed, *issues, ""]
    ceiling = results.get("load_generator_ceiling") or {}
    if ceiling:
        out.append(
            "Load generator ceiling (trivial server): "
            + ", ".join(f"{k} {v['req_per_s']:,.0f} req/s" for k, v in ceiling.items())
            + "."
        )
    return "\n".join(out) + "\n"
