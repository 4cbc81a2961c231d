"""Assays in the control plane: apply (validate + bin the baseline), run due windows, results, alerts."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import httpx
import numpy as np
from pydantic import ValidationError
from sqlalchemy import delete, select

from cluster.auth import Principal, Role
from cluster.registry import Registry, spec_errors
from cluster.store.tables import Assay, AssayResult
from monitoring.assay_spec import AssaySpec
from monitoring.assays import WindowResult, bin_edges, bin_fractions, evaluate_window, window_bounds
from monitoring.charts import drift_chart_png
from monitoring.log_store import LogStore
from pipelines.errors import CorralError, InvalidInput, NotFound
from pipelines.spec import check_name

log = logging.getLogger("corral.assays")
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
WEBHOOK_TIMEOUT_S = 5.0
ResultHook = Callable[[str, str, AssaySpec, WindowResult], None]
KnownColumns = Callable[[str, str], set[str]]


@dataclass
class AssayRecord:
    workspace: str
    name: str
    spec: AssaySpec
    edges: np.ndarray
    expected: np.ndarray
    next_start: datetime


class AssayService:
    """Owns assays and their results. `known_columns(workspace, pipeline)` says what a pipeline takes
    and returns (from its spec); `on_result` is told of every stored window (gauges)."""

    def __init__(
        self, registry: Registry, logs: LogStore, known_columns: KnownColumns, on_result: ResultHook | None = None
    ) -> None:
        self.registry = registry
        self.db = registry.db
        self.logs = logs
        self.known_columns = known_columns
        self.on_result = on_result

    # --- apply ----------------------------------------------------------------------------------
    def put(self, who: Principal, workspace: str, name: str, data: Any) -> tuple[dict[str, Any], bool]:
        """Validate and store an assay; 201 new, 200 unchanged or updated (an update starts its results over)."""
        self.registry.check_workspace(who, workspace, Role.editor)
        try:
            check_name("assay", name)
            spec = AssaySpec.model_validate(data)
        except ValidationError as exc:
            raise InvalidInput(f"invalid assay spec: {spec_errors(exc)}") from None
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        self.registry.get_pipeline_version(who, workspace, spec.pipeline)  # 404 unless visible
        self._check_target(workspace, spec)
        baseline = self._baseline(workspace, spec)
        edges = bin_edges(baseline, spec.bins)
        expected = bin_fractions(baseline, edges)
        canonical = spec.model_dump(mode="json")
        with self.db.session() as s:
            row = s.get(Assay, (workspace, name))
            if row is not None and row.spec == canonical:
                return self._describe(row), False
            created = row is None
            if row is None:
                row = Assay(workspace=workspace, name=name)
                s.add(row)
            else:
                s.execute(delete(AssayResult).where(AssayResult.workspace == workspace, AssayResult.assay == name))
            row.spec = canonical
            row.edges = [float(e) for e in edges]
            row.expected = [float(e) for e in expected]
            row.next_start = self._first_window(spec)
            return self._describe(row), created

    def _check_target(self, workspace: str, spec: AssaySpec) -> None:
        logged = set(self.logs.column_names(workspace, spec.pipeline, EPOCH, datetime.now(UTC) + timedelta(days=1)))
        known = logged | self.known_columns(workspace, spec.pipeline)
        if spec.target not in known:
            columns = sorted(c for c in known if c.startswith(("in.", "out.")))
            raise InvalidInput(
                f"target {spec.target!r} is not a column of pipeline {spec.pipeline!r}: pick one of {columns}"
            )

    def _baseline(self, workspace: str, spec: AssaySpec) -> np.ndarray:
        if spec.baseline.values is not None:
            return np.asarray(spec.baseline.values, np.float64)
        assert spec.baseline.start is not None and spec.baseline.end is not None
        values = self._values(workspace, spec, spec.baseline.start, spec.baseline.end)
        if values.size == 0:
            raise InvalidInput(
                f"empty baseline: pipeline {spec.pipeline!r} logged no {spec.target} values between "
                f"{spec.baseline.start.isoformat()} and {spec.baseline.end.isoformat()}; pick a window with "
                "traffic (see `corral logs`) or give the baseline as {values: [...]}"
            )
        return values

    def _values(self, workspace: str, spec: AssaySpec, start: datetime, end: datetime) -> np.ndarray:
        try:
            return self.logs.values(workspace, spec.pipeline, spec.target, start, end)[1]
        except duckdb.Error as exc:
            raise InvalidInput(f"target {spec.target!r} is not a numeric column: {exc}") from None

    @staticmethod
    def _first_window(spec: AssaySpec) -> datetime:
        if spec.window.start is not None:
            return spec.window.start
        if spec.baseline.end is not None:
            return spec.baseline.end
        return datetime.now(UTC)

    # --- read -----------------------------------------------------------------------------------
    def _load(self, who: Principal, workspace: str, name: str) -> AssayRecord:
        self.registry.check_workspace(who, workspace, Role.viewer)
        with self.db.session() as s:
            row = s.get(Assay, (workspace, name))
            if row is None:
                raise NotFound(f"no assay {name!r} in workspace {workspace!r}: create it with PUT .../assays/{name}")
            return _record(row)

    def get(self, who: Principal, workspace: str, name: str) -> dict[str, Any]:
        self.registry.check_workspace(who, workspace, Role.viewer)
        with self.db.session() as s:
            row = s.get(Assay, (workspace, name))
            if row is None:
                raise NotFound(f"no assay {name!r} in workspace {workspace!r}")
            return self._describe(row)

    def list_all(self, who: Principal, workspace: str) -> list[dict[str, Any]]:
        self.registry.check_workspace(who, workspace, Role.viewer)
        with self.db.session() as s:
            rows = s.scalars(select(Assay).where(Assay.workspace == workspace)).all()
            return [self._describe(r) for r in sorted(rows, key=lambda r: r.name)]  # not the database's collation

    def delete(self, who: Principal, workspace: str, name: str) -> None:
        self._load(who, workspace, name)
        self.registry.check_workspace(who, workspace, Role.editor)
        with self.db.session() as s:
            s.execute(delete(AssayResult).where(AssayResult.workspace == workspace, AssayResult.assay == name))
            s.execute(delete(Assay).where(Assay.workspace == workspace, Assay.name == name))

    def results(
        self, who: Principal, workspace: str, name: str, start: datetime, end: datetime
    ) -> list[WindowResult]:
        """Stored windows that start in [start, end), oldest first."""
        self._load(who, workspace, name)
        with self.db.session() as s:
            rows = s.scalars(
                select(AssayResult)
                .where(
                    AssayResult.workspace == workspace,
                    AssayResult.assay == name,
                    AssayResult.window_start >= start,
                    AssayResult.window_start < end,
                )
                .order_by(AssayResult.window_start)
            ).all()
            return [_window_result(r.result) for r in rows]

    def preview(self, who: Principal, workspace: str, name: str, start: datetime, end: datetime) -> list[WindowResult]:
        """The assay's windows over logged history in [start, end), computed now and not stored."""
        record = self._load(who, workspace, name)
        bounds = window_bounds(start, end, record.spec.window.width, record.spec.window.interval)
        return [self._evaluate(record, s, e) for s, e in bounds]

    def chart(self, who: Principal, workspace: str, name: str, results: list[WindowResult]) -> bytes:
        return drift_chart_png(results, self._load(who, workspace, name).spec)

    def _evaluate(self, record: AssayRecord, start: datetime, end: datetime) -> WindowResult:
        values = self._values(record.workspace, record.spec, start, end)
        return evaluate_window(record.edges, record.expected, values, start, end, record.spec)

    # --- scheduler ------------------------------------------------------------------------------
    def run_due(self, now: datetime | None = None) -> int:
        """Compute and store every window of an active assay that has ended; returns how many."""
        now = now or datetime.now(UTC)
        with self.db.session() as s:
            records = [_record(r) for r in s.scalars(select(Assay)).all()]
        done = 0
        for record in records:
            if not record.spec.active:
                continue
            try:
                done += self._run_one(record, now)
            except CorralError as exc:  # one broken assay must not stop the others
                log.warning("assay %s/%s: %s", record.workspace, record.name, exc.message)
        return done

    def _run_one(self, record: AssayRecord, now: datetime) -> int:
        window = record.spec.window
        bounds = window_bounds(record.next_start, now, window.width, window.interval)
        if not bounds:
            return 0
        results = [self._evaluate(record, s, e) for s, e in bounds]
        next_start = bounds[-1][0] + timedelta(seconds=window.interval)
        with self.db.session() as s:
            row = s.get(Assay, (record.workspace, record.name))
            if row is None or row.spec != record.spec.model_dump(mode="json"):
                return 0  # changed or deleted meanwhile: its new version starts over
            for result in results:
                s.add(
                    AssayResult(
                        workspace=record.workspace,
                        assay=record.name,
                        window_start=result.window_start,
                        window_end=result.window_end,
                        status=result.status,
                        result=result.to_dict(),
                    )
                )
            row.next_start = next_start
        for result in results:
            if self.on_result is not None:
                self.on_result(record.workspace, record.name, record.spec, result)
            if result.status == "alert" and record.spec.alert_webhook:
                self._notify(record, result)
        return len(results)

    def _notify(self, record: AssayRecord, result: WindowResult) -> None:
        """POST one alert; a slow or failing webhook is logged and never stops the assays."""
        assert record.spec.alert_webhook is not None
        body = {
            "workspace": record.workspace,
            "assay": record.name,
            "pipeline": record.spec.pipeline,
            "target": record.spec.target,
            "metric": record.spec.metric,
            "thresholds": record.spec.thresholds.model_dump(),
            **{k: v for k, v in result.to_dict().items() if k not in ("edges", "expected", "actual")},
        }
        try:
            reply = httpx.post(record.spec.alert_webhook, json=body, timeout=WEBHOOK_TIMEOUT_S)
            if reply.status_code >= 400:
                log.warning("assay %s webhook answered %d", record.name, reply.status_code)
        except httpx.HTTPError as exc:
            log.warning("assay %s webhook %s failed: %s", record.name, record.spec.alert_webhook, exc)

    @staticmethod
    def _describe(row: Assay) -> dict[str, Any]:
        return {"name": row.name, "spec": row.spec, "edges": row.edges, "next_window_start": _iso(row.next_start)}


def _record(row: Assay) -> AssayRecord:
    return AssayRecord(
        workspace=row.workspace,
        name=row.name,
        spec=AssaySpec.model_validate(row.spec),
        edges=np.asarray(row.edges, np.float64),
        expected=np.asarray(row.expected, np.float64),
        next_start=_utc(row.next_start),
    )


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value  # SQLite drops the zone


def _iso(value: datetime) -> str:
    return _utc(value).isoformat()


def _window_result(data: dict[str, Any]) -> WindowResult:
    return WindowResult(
        window_start=datetime.fromisoformat(data["window_start"]),
        window_end=datetime.fromisoformat(data["window_end"]),
        score=data["score"],
        status=data["status"],
        bin_scores=data["bin_scores"],
        rows=data["rows"],
        edges=data["edges"],
        expected=data["expected"],
        actual=data["actual"],
    )
