"""The log sink: one replica that writes every pipeline's inference-log batches to Parquet.

Routers send batches of rows (Arrow tables) every ~100 ms; inference rows get their `anomaly.*`
columns here, a batch at a time, off the request path. Each batch is written to its own
Parquet file at once (locally fsync + atomic rename, on an object store one PUT), so a crash of
the sink loses nothing it has acknowledged. Small files are merged in the background and on
shutdown. The logs live under CORRAL_LOGS_URI: a directory or an object store such as S3.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pyarrow as pa
import pyarrow.compute as pc
from ray import serve

from deployments.health import HEALTH_CHECK_PERIOD_S
from deployments.metrics import metric
from monitoring.log_schema import with_anomalies
from monitoring.log_store import INFERENCES, LogStore
from monitoring.metrics import VALIDATION_FAILURES
from pipelines.ipc import table_from_ipc
from pipelines.rules import Rule, flag_rows, parse_rules

log = logging.getLogger("corral.logsink")

COMPACT_EVERY_S = 30.0


@serve.deployment(
    num_replicas=1,
    ray_actor_options={"num_cpus": 0.25},
    max_ongoing_requests=256,
    graceful_shutdown_timeout_s=60,
    health_check_period_s=HEALTH_CHECK_PERIOD_S,
)
class LogSink:
    """Writes inference and shadow rows; `flush` merges small files (called by `corral down`)."""

    def __init__(self, logs_uri: str) -> None:
        self.store = LogStore(logs_uri)
        self.rows_written = 0
        self.compactor: asyncio.Task[None] | None = None
        self.rules: dict[tuple[tuple[str, str], ...], list[Rule]] = {}
        self.failing: set[tuple[str, str]] = set()

    def _ensure_compactor(self) -> None:
        if self.compactor is None or self.compactor.done():
            self.compactor = asyncio.get_running_loop().create_task(self._compact_forever())

    async def _compact_forever(self) -> None:
        while True:
            await asyncio.sleep(COMPACT_EVERY_S)
            try:
                await asyncio.to_thread(self.store.compact)
            except Exception:  # compaction is an optimisation: never let it stop the sink
                log.exception("log compaction failed")

    async def append(
        self,
        kind: str,
        workspace: str,
        pipeline: str,
        rows: pa.Table | bytes,
        validations: dict[str, str] | None = None,
    ) -> int:
        """Flag inference rows with the pipeline's validations, then write the batch now; returns its rows.
        `rows` is a table or its Arrow IPC stream bytes (what routers send)."""
        self._ensure_compactor()
        table = table_from_ipc(rows)
        written = await asyncio.to_thread(self._write, kind, workspace, pipeline, table, validations or {})
        self.rows_written += written
        return written

    def _write(self, kind: str, workspace: str, pipeline: str, rows: pa.Table, validations: dict[str, str]) -> int:
        if kind == INFERENCES:
            rows = self._flag(workspace, pipeline, rows, validations)
        return self.store.write(kind, workspace, pipeline, rows)

    def _flag(self, workspace: str, pipeline: str, rows: pa.Table, validations: dict[str, str]) -> pa.Table:
        key = tuple(sorted(validations.items()))
        if key not in self.rules:
            self.rules[key] = parse_rules(validations)  # checked when the spec was stored: it parses
        flags = flag_rows(self.rules[key], rows)
        tags = {"workspace": workspace, "pipeline": pipeline}
        for rule in self.rules[key]:
            flagged = pc.sum(flags.columns[rule.column_name]).as_py() or 0
            if flagged:
                metric(VALIDATION_FAILURES).inc(flagged, {**tags, "validation": rule.name})
        for name, error in flags.errors.items():
            if (pipeline, name) not in self.failing:
                self.failing.add((pipeline, name))  # once per rule: the log is not a firehose
                log.warning("validation %r of %s/%s could not run: %s", name, workspace, pipeline, error)
        return with_anomalies(rows, flags.columns)

    async def flush(self) -> int:
        """Merge small files of every partition; returns the number of partitions merged."""
        return await asyncio.to_thread(self.store.compact, 2)

    async def stats(self) -> dict[str, int]:
        return {"rows_written": self.rows_written}

    async def __del__(self) -> None:
        if self.compactor is not None:
            self.compactor.cancel()
        with contextlib.suppress(Exception):
            await self.flush()
