"""Inference logs on disk: Parquet files partitioned by workspace/pipeline/date, queried with DuckDB.

Layout under the logs root: `<kind>/workspace=<w>/pipeline=<p>/date=<YYYY-MM-DD>/part-*.parquet`,
kind `inferences` (one row per answered row) or `shadows` (shadow outputs and errors). Every write is
its own file, made visible by an atomic rename, so a crash never leaves half a file and a reader never
sees one. `compact` merges a partition's small files into one; it and the readers share a file lock,
so a query never sees a file twice or misses one that is being merged (local filesystems).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from monitoring.log_schema import ERROR, INFERENCES, OUT, REQUEST_ID, ROW, SHADOW, SHADOWS, TIME, VARIANT

log = logging.getLogger("corral.logs")

KINDS = (INFERENCES, SHADOWS)
# Compaction merges files below this size: a merged file this large is final (rewriting it with every
# merge made the sink's work per merge grow with the day's log, and its memory with it).
SMALL_FILE_BYTES = 16 * 2**20
MERGE_ROW_GROUP = 64 * 1024  # rows a merge holds in memory and writes as one row group
# A shadow call may finish up to its timeout after the primary reply was logged.
SHADOW_LAG = timedelta(seconds=60)


def _size(path: Path) -> float:
    try:
        return path.stat().st_size
    except FileNotFoundError:  # gone since the folder was listed: nothing to merge
        return float("inf")


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class LogStore:
    """Writes and reads the inference logs of every pipeline under one root directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock_path = self.root / ".lock"
        self._lock_path.touch(exist_ok=True)

    # --- paths and locking --------------------------------------------------------------------
    def partition(self, kind: str, workspace: str, pipeline: str, day: date) -> Path:
        return self.root / kind / f"workspace={workspace}" / f"pipeline={pipeline}" / f"date={day.isoformat()}"

    @contextlib.contextmanager
    def _locked(self, exclusive: bool) -> Iterator[None]:
        with open(self._lock_path, "rb") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def files(self, kind: str, workspace: str, pipeline: str, start: datetime, end: datetime) -> list[str]:
        """Parquet files of the partitions whose date overlaps [start, end]."""
        base = self.root / kind / f"workspace={workspace}" / f"pipeline={pipeline}"
        if not base.is_dir():
            return []
        first, last = start.astimezone(UTC).date(), end.astimezone(UTC).date()
        found: list[str] = []
        for folder in sorted(base.glob("date=*")):
            try:
                day = date.fromisoformat(folder.name[5:])
            except ValueError:
                continue
            if first <= day <= last:
                found.extend(str(p) for p in sorted(folder.glob("*.parquet")))
        return found

    # --- writing ------------------------------------------------------------------------------
    def write(self, kind: str, workspace: str, pipeline: str, rows: pa.Table) -> int:
        """Store rows (each lands in the partition of its own UTC date); returns the rows written."""
        if kind not in KINDS:
            raise ValueError(f"unknown log kind {kind!r}")
        if rows.num_rows == 0:
            return 0
        days = pc.strftime(rows.column(TIME), format="%Y-%m-%d", locale="C")
        for day in pc.unique(days).to_pylist():
            part = rows.filter(pc.equal(days, day)) if pc.count_distinct(days).as_py() > 1 else rows
            self._write_file(self.partition(kind, workspace, pipeline, date.fromisoformat(day)), part)
        return rows.num_rows

    @classmethod
    def _write_file(cls, folder: Path, rows: pa.Table) -> Path:
        return cls._publish(folder, lambda path: pq.write_table(rows, path, compression="zstd"))

    @staticmethod
    def _publish(folder: Path, write: Callable[[Path], None]) -> Path:
        """`write(path)` a new part file under a temporary name, then make it visible at once."""
        folder.mkdir(parents=True, exist_ok=True)
        name = f"part-{time.time_ns()}-{uuid.uuid4().hex[:8]}.parquet"
        tmp = folder / f".{name}.tmp"
        try:
            write(tmp)
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())  # the rename must not expose a file whose bytes are still in memory
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, folder / name)
        return folder / name

    def compact(self, min_files: int = 16, small_bytes: int = SMALL_FILE_BYTES) -> int:
        """Merge the small files (under `small_bytes`) of each partition that holds at least `min_files`
        of them into one file; returns merges. Files already that large are left alone, so a merge
        costs what was written since the last one, not the whole day logged so far."""
        merged = 0
        for kind in KINDS:
            for folder in sorted((self.root / kind).glob("workspace=*/pipeline=*/date=*")):
                parts = [p for p in sorted(folder.glob("part-*.parquet")) if _size(p) < small_bytes]
                if len(parts) < max(min_files, 2):
                    continue
                with self._locked(exclusive=True):
                    if not self._merge(folder, parts):
                        continue
                    for part in parts:
                        part.unlink(missing_ok=True)
                merged += 1
        pa.default_memory_pool().release_unused()  # merges come in bursts: give the pages back between them
        return merged

    def _merge(self, folder: Path, parts: list[Path]) -> bool:
        """Write `parts` as one file, streaming: at most about MERGE_ROW_GROUP rows are in memory."""
        try:
            schema = pa.unify_schemas([pq.read_schema(p) for p in parts], promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            # A column changed type between pipeline versions: leave the files apart (DuckDB still
            # reads them together).
            log.warning("not compacting %s: %s", folder, exc)
            return False

        def write(path: Path) -> None:
            with pq.ParquetWriter(path, schema, compression="zstd") as writer:
                pending: list[pa.Table] = []
                rows = 0
                for part in parts:  # names sort by write time, so the merged file is in time order
                    # In batches: a part merged before can hold millions of rows (~0.7 GB unpacked).
                    with pq.ParquetFile(part) as source:
                        for batch in source.iter_batches(batch_size=MERGE_ROW_GROUP):
                            pending.append(_conform(pa.Table.from_batches([batch]), schema))
                            rows += batch.num_rows
                            if rows >= MERGE_ROW_GROUP:
                                writer.write_table(pa.concat_tables(pending))
                                pending, rows = [], 0
                if pending:
                    writer.write_table(pa.concat_tables(pending))

        try:
            self._publish(folder, write)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
            log.warning("not compacting %s: %s", folder, exc)
            return False
        return True

    # --- reading ------------------------------------------------------------------------------
    def query(
        self, workspace: str, pipeline: str, start: datetime, end: datetime, limit: int
    ) -> pa.Table:
        """The newest `limit` rows logged in [start, end), oldest first, with shadow columns joined."""
        with self._locked(exclusive=False):
            primary = self.files(INFERENCES, workspace, pipeline, start, end)
            if not primary:
                return pa.table({})
            shadows = self.files(SHADOWS, workspace, pipeline, start, end + SHADOW_LAG)
            con = duckdb.connect()
            try:
                con.execute(
                    "CREATE TEMP TABLE p AS SELECT * FROM read_parquet(?, union_by_name=true, hive_partitioning=false) "
                    "WHERE time >= ? AND time < ? ORDER BY time DESC, request_id, _row LIMIT ?",
                    [primary, start, end, limit],
                )
                select = "SELECT p.* EXCLUDE (_row)"
                joins = ""
                if shadows:
                    select, joins = self._shadow_join(con, shadows, select)
                table = con.sql(f"{select} FROM p{joins} ORDER BY p.time, p.request_id, p._row").to_arrow_table()
            finally:
                con.close()
        return table

    @staticmethod
    def _shadow_join(con: duckdb.DuckDBPyConnection, files: list[str], select: str) -> tuple[str, str]:
        con.execute(
            "CREATE TEMP TABLE s AS SELECT * FROM read_parquet(?, union_by_name=true, hive_partitioning=false) "
            "WHERE request_id IN (SELECT request_id FROM p)",
            [files],
        )
        out_columns = [row[0] for row in con.execute("DESCRIBE s").fetchall() if str(row[0]).startswith(OUT)]
        counts = ", ".join(f"count({_quote(c)})" for c in out_columns)
        per_variant = con.execute(
            f"SELECT variant{', ' + counts if counts else ''} FROM s GROUP BY variant ORDER BY variant"
        ).fetchall()
        joins = []
        for index, (variant, *present) in enumerate(per_variant):
            alias = f"s{index}"
            select += f", {alias}.{ERROR} AS {_quote(f'{SHADOW}{variant}.{ERROR}')}"
            for column, count in zip(out_columns, present, strict=True):
                if count:
                    select += f", {alias}.{_quote(column)} AS {_quote(f'{SHADOW}{variant}.{column}')}"
            joins.append(
                f" LEFT JOIN s AS {alias} ON {alias}.{REQUEST_ID} = p.{REQUEST_ID} "
                f"AND {alias}.{ROW} = p.{ROW} AND {alias}.{VARIANT} = {_sql_string(variant)}"
            )
        return select, "".join(joins)

    def column_names(self, workspace: str, pipeline: str, start: datetime, end: datetime) -> list[str]:
        """The columns logged for a pipeline in a time range (empty when nothing was logged)."""
        with self._locked(exclusive=False):
            files = self.files(INFERENCES, workspace, pipeline, start, end)
            if not files:
                return []
            con = duckdb.connect()
            try:
                rows = con.execute(
                    "DESCRIBE SELECT * FROM read_parquet(?, union_by_name=true, hive_partitioning=false)", [files]
                ).fetchall()
            finally:
                con.close()
        return [str(row[0]) for row in rows]

    def values(
        self, workspace: str, pipeline: str, column: str, start: datetime, end: datetime
    ) -> tuple[np.ndarray, np.ndarray]:
        """(times as epoch microseconds, values as float64) of one numeric column in [start, end)."""
        with self._locked(exclusive=False):
            files = self.files(INFERENCES, workspace, pipeline, start, end)
            if not files:
                return np.empty(0, np.int64), np.empty(0, np.float64)
            con = duckdb.connect()
            try:
                result = con.execute(
                    f"SELECT epoch_us(time) AS t, CAST({_quote(column)} AS DOUBLE) AS v "
                    "FROM read_parquet(?, union_by_name=true, hive_partitioning=false) WHERE time >= ? AND time < ? "
                    f"AND {_quote(column)} IS NOT NULL",
                    [files, start, end],
                ).fetchnumpy()
            finally:
                con.close()
        return np.asarray(result["t"], np.int64), np.asarray(result["v"], np.float64)


def rows_as_json(table: pa.Table) -> list[dict[str, object]]:
    """Log rows as JSON-ready dicts: times in ISO 8601 UTC, NaN as null (orjson writes NaN as null)."""
    rows = table.to_pylist()
    for row in rows:
        stamp = row.get(TIME)
        if isinstance(stamp, datetime):
            row[TIME] = stamp.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return rows


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` with exactly `schema`'s columns: missing ones null, the others cast (promotions only)."""
    columns = [
        table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)
