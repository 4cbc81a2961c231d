"""Inference logs: Parquet files partitioned by workspace/pipeline/date, queried with DuckDB.

The root is a local directory or an object-store URI (`s3://bucket/logs?endpoint_override=...`,
anything pyarrow.fs opens). Layout under it: `<kind>/workspace=<w>/pipeline=<p>/date=<YYYY-MM-DD>/
part-*.parquet`, kind `inferences` (one row per answered row) or `shadows` (shadow outputs and
errors). Every write is its own file and appears whole or not at all (locally fsync + atomic
rename, on an object store one PUT), so a crash never leaves half a file and a reader never sees one.
`compact` merges a partition's small files into one. Locally it and the readers share a file lock,
so a query never sees a file twice or misses one that is being merged. An object store has neither
rename nor a lock across processes: there each partition's head object says which files are live
(monitoring.log_head) and merged files are named `merge-*.parquet`.

DuckDB reads local files itself. Object-store files reach it as pyarrow datasets over the store's
pyarrow filesystem, registered in the connection (DuckDB scans them with projection and filter
pushdown): no DuckDB extension (httpfs) is needed, nor ever downloaded.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pydantic import ValidationError

from monitoring.log_head import HEAD, MERGE_PREFIX, PART_PREFIX, SUFFIX, PartitionHead
from monitoring.log_schema import ERROR, INFERENCES, OUT, REQUEST_ID, ROW, SHADOW, SHADOWS, TIME, VARIANT
from pipelines.storage import filesystem_of, redacted

log = logging.getLogger("corral.logs")

KINDS = (INFERENCES, SHADOWS)
# Compaction merges files below this size: a merged file this large is final (rewriting it with every
# merge made the sink's work per merge grow with the day's log, and its memory with it).
SMALL_FILE_BYTES = 16 * 2**20
MERGE_ROW_GROUP = 64 * 1024  # rows a merge holds in memory and writes as one row group
# A shadow call may finish up to its timeout after the primary reply was logged.
SHADOW_LAG = timedelta(seconds=60)
# Object stores: how long the files a merge replaced outlive it. A reader that took a partition's
# head before the merge may still be about to read them; it must list the folder within half this.
GRACE_S = 120.0
READ_ATTEMPTS = 3  # object stores: a query whose files were merged away under it reads again
HEAD_READ_ATTEMPTS = 5  # a head read cut by a newer PUT (see LogStore._head)
_FOOTER_THREADS = 8  # object stores: Parquet footers read at once (each is a round trip)

T = TypeVar("T")


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _new_name(prefix: str) -> str:
    return f"{prefix}{time.time_ns()}-{uuid.uuid4().hex[:8]}{SUFFIX}"


def _name(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def connect() -> duckdb.DuckDBPyConnection:
    """A DuckDB connection that never installs or loads an extension on its own (no network)."""
    return duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})


class LogStore:
    """Writes and reads the inference logs of every pipeline under one root (a directory or a URI)."""

    def __init__(self, root: str | Path, grace_s: float = GRACE_S) -> None:
        self.uri = str(root)
        self.fs, self.root = filesystem_of(self.uri)
        self.local = isinstance(self.fs, pafs.LocalFileSystem)
        self.grace_s = grace_s
        self._compacting = threading.Lock()  # the sink's periodic merge and its flush never overlap
        if self.local:
            Path(self.root).mkdir(parents=True, exist_ok=True)
            self._lock_path = Path(self.root) / ".lock"
            self._lock_path.touch(exist_ok=True)

    def __repr__(self) -> str:
        return f"LogStore({redacted(self.uri)!r})"

    # --- paths, listing and locking -----------------------------------------------------------
    def folder(self, kind: str, workspace: str, pipeline: str, day: date) -> str:
        """A partition's folder, as a path in the store's filesystem."""
        return f"{self._base(kind, workspace, pipeline)}/date={day.isoformat()}"

    def partition(self, kind: str, workspace: str, pipeline: str, day: date) -> Path:
        """A partition's folder on the local disk (local stores only: see `folder`)."""
        if not self.local:
            raise ValueError(f"{redacted(self.uri)} is not a local directory: use folder()")
        return Path(self.folder(kind, workspace, pipeline, day))

    def _base(self, kind: str, workspace: str, pipeline: str) -> str:
        return f"{self.root}/{kind}/workspace={workspace}/pipeline={pipeline}"

    def _entries(self, folder: str) -> list[pafs.FileInfo]:
        return list(self.fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True)))

    def _subfolders(self, folder: str, prefix: str) -> list[str]:
        entries = self._entries(folder)
        return sorted(i.path for i in entries if i.type == pafs.FileType.Directory and i.base_name.startswith(prefix))

    def _sizes(self, folder: str) -> dict[str, int]:
        """File name -> bytes of a folder's files."""
        return {i.base_name: i.size or 0 for i in self._entries(folder) if i.type == pafs.FileType.File}

    def _partitions(self, kind: str) -> list[str]:
        """Every partition folder of a kind (`workspace=*/pipeline=*/date=*`)."""
        return [
            day
            for workspace in self._subfolders(f"{self.root}/{kind}", "workspace=")
            for pipeline in self._subfolders(workspace, "pipeline=")
            for day in self._subfolders(pipeline, "date=")
        ]

    @contextlib.contextmanager
    def _locked(self, exclusive: bool) -> Iterator[None]:
        if not self.local:  # an object store has no shared lock: partition heads keep readers right
            yield
            return
        with open(self._lock_path, "rb") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def files(self, kind: str, workspace: str, pipeline: str, start: datetime, end: datetime) -> list[str]:
        """Parquet files (paths in the store's filesystem) of the partitions whose date overlaps [start, end]."""
        first, last = start.astimezone(UTC).date(), end.astimezone(UTC).date()
        found: list[str] = []
        for folder in self._subfolders(self._base(kind, workspace, pipeline), "date="):
            try:
                day = date.fromisoformat(_name(folder)[5:])
            except ValueError:
                continue
            if first <= day <= last:
                found.extend(f"{folder}/{name}" for name in self._live(folder))
        return found

    def _live(self, folder: str) -> list[str]:
        """The names of the files a reader reads in a partition folder."""
        if self.local:
            return sorted(name for name in self._sizes(folder) if name.endswith(SUFFIX))
        for _ in range(READ_ATTEMPTS):
            started = time.monotonic()
            head = self._head(folder)  # first the head, then the listing: see monitoring.log_head
            names = list(self._sizes(folder))
            if time.monotonic() - started < self.grace_s / 2:
                return head.live(names)
            log.warning("listing %s took over half the merge grace: listing it again", folder)
        raise OSError(f"listing {folder} keeps taking longer than {self.grace_s / 2:g} s: try again")

    def _head(self, folder: str) -> PartitionHead:
        # pyarrow reads an object by its size (a HEAD request), then ranged GETs: a head PUT between
        # the two is read cut at the old size (seen against the S3 server in the tests). The newer
        # head is whole on the next read.
        for _ in range(HEAD_READ_ATTEMPTS - 1):
            with contextlib.suppress(ValidationError):
                return self._read_head(folder)
            log.info("the head of %s changed while it was read: reading it again", folder)
        return self._read_head(folder)

    def _read_head(self, folder: str) -> PartitionHead:
        try:
            with self.fs.open_input_stream(f"{folder}/{HEAD}") as src:
                return PartitionHead.model_validate_json(src.read())
        except FileNotFoundError:
            return PartitionHead()

    def _put(self, path: str, data: bytes) -> None:
        with self.fs.open_output_stream(path) as out:
            out.write(data)

    def _schemas(self, paths: list[str]) -> list[pa.Schema]:
        """The Parquet schemas of `paths` (their footers; read in parallel from an object store)."""

        def read(path: str) -> pa.Schema:
            return pq.read_schema(path, filesystem=self.fs)

        if self.local or len(paths) < 2:
            return [read(p) for p in paths]
        with ThreadPoolExecutor(min(_FOOTER_THREADS, len(paths))) as pool:
            return list(pool.map(read, paths))

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
            self._write_file(self.folder(kind, workspace, pipeline, date.fromisoformat(day)), part)
        return rows.num_rows

    def _write_file(self, folder: str, rows: pa.Table) -> str:
        name = _new_name(PART_PREFIX)
        if self.local:
            return self._publish(folder, name, lambda path: pq.write_table(rows, path, compression="zstd"))
        # Whole in memory first (a part is one batch): one PUT then shows all of it or nothing, where a
        # writer streaming to the store would complete the object with half a file if it failed midway.
        buffer = pa.BufferOutputStream()
        pq.write_table(rows, buffer, compression="zstd")
        self._put(f"{folder}/{name}", buffer.getvalue().to_pybytes())
        return f"{folder}/{name}"

    @staticmethod
    def _publish(folder: str, name: str, write: Callable[[str], None]) -> str:
        """Local: `write(path)` a new file under a temporary name, then make it visible at once."""
        Path(folder).mkdir(parents=True, exist_ok=True)
        tmp = f"{folder}/.{name}.tmp"
        try:
            write(tmp)
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())  # the rename must not expose a file whose bytes are still in memory
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        os.replace(tmp, f"{folder}/{name}")
        return f"{folder}/{name}"

    # --- compaction ---------------------------------------------------------------------------
    def compact(self, min_files: int = 16, small_bytes: int = SMALL_FILE_BYTES) -> int:
        """Merge the small files (under `small_bytes`) of each partition that holds at least `min_files`
        of them into one file; returns merges. Files already that large are left alone, so a merge
        costs what was written since the last one, not the whole day logged so far. On an object
        store this also deletes what earlier merges replaced, once the grace has passed."""
        merged = 0
        compact = self._compact_local if self.local else self._compact_remote
        with self._compacting:
            for kind in KINDS:
                for folder in self._partitions(kind):
                    merged += compact(folder, max(min_files, 2), small_bytes)
        pa.default_memory_pool().release_unused()  # merges come in bursts: give the pages back between them
        return merged

    def _compact_local(self, folder: str, min_files: int, small_bytes: int) -> bool:
        sizes = self._sizes(folder)
        parts = [f"{folder}/{n}" for n in sorted(sizes) if n.startswith(PART_PREFIX) and n.endswith(SUFFIX)]
        parts = [p for p in parts if sizes[_name(p)] < small_bytes]
        if len(parts) < min_files:
            return False
        with self._locked(exclusive=True):
            schema = self._merge_schema(folder, parts)
            if schema is None:
                return False
            try:
                self._publish(folder, _new_name(PART_PREFIX), lambda path: self._write_merged(path, parts, schema))
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
                log.warning("not compacting %s: %s", folder, exc)
                return False
            for part in parts:
                Path(part).unlink(missing_ok=True)
        return True

    def _compact_remote(self, folder: str, min_files: int, small_bytes: int) -> bool:
        head, sizes = self._tidy(folder, time.time())
        parts = [f"{folder}/{n}" for n in head.live(sizes) if sizes[n] < small_bytes]
        if len(parts) < min_files:
            return False
        merged = self.stage_merge(folder, parts)
        return merged is not None and self.commit_merge(folder, parts, merged)

    def stage_merge(self, folder: str, parts: list[str]) -> str | None:
        """Object stores, merge step 1: write `parts` as one `merge-*` file, which no reader reads
        before `commit_merge`; returns its path (None: the parts do not merge, left as they are)."""
        schema = self._merge_schema(folder, parts)
        if schema is None:
            return None
        path = f"{folder}/{_new_name(MERGE_PREFIX)}"
        try:
            self._write_merged(path, parts, schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
            log.warning("not compacting %s: %s", folder, exc)
            with contextlib.suppress(OSError):
                self.fs.delete_file(path)  # uncommitted, so unread; else the garbage collection takes it
            return None
        return path

    def commit_merge(self, folder: str, parts: list[str], merged: str) -> bool:
        """Object stores, merge step 2: one PUT of the partition head makes readers read `merged`
        instead of `parts`; the parts are deleted by a compaction at least the grace later. False
        (and `merged` deleted) when a part is no longer live: another compactor merged it meanwhile."""
        head = self._head(folder)  # as it is now, not as it was when the merge began
        names = [_name(p) for p in parts]
        if len(head.live(names)) != len(names):
            log.warning("not committing a merge in %s: its files were merged meanwhile", folder)
            with contextlib.suppress(OSError):
                self.fs.delete_file(merged)
            return False
        committed = head.after_merge(names, _name(merged), time.time())
        self._put(f"{folder}/{HEAD}", committed.model_dump_json().encode())
        return True

    def collect_garbage(self, folder: str, now: float | None = None) -> int:
        """Object stores, merge step 3 (done by `compact`): delete the files merges replaced more than
        the grace before `now`, and merged files never committed; returns the files deleted."""
        before = len(self._sizes(folder))
        _, sizes = self._tidy(folder, time.time() if now is None else now)
        return before - len(sizes)

    def _tidy(self, folder: str, now: float) -> tuple[PartitionHead, dict[str, int]]:
        """Garbage-collect a partition; returns its head and file sizes after that."""
        head = self._head(folder)
        sizes = self._sizes(folder)
        doomed = head.expired(now, self.grace_s) + head.orphans(sizes, int(now * 1e9), self.grace_s)
        deleted: list[str] = []
        for name in doomed:
            try:
                self.fs.delete_file(f"{folder}/{name}")
            except FileNotFoundError:
                pass  # gone already (a collection that stopped before it rewrote the head)
            except OSError as exc:
                log.warning("could not delete %s/%s (next compaction tries again): %s", folder, name, exc)
                continue
            deleted.append(name)
        tidied = head.without(deleted)
        if tidied != head:  # files first, then the head: a head never lacks a file that is still there
            self._put(f"{folder}/{HEAD}", tidied.model_dump_json().encode())
        return tidied, {n: s for n, s in sizes.items() if n not in deleted}

    def _merge_schema(self, folder: str, parts: list[str]) -> pa.Schema | None:
        try:
            return pa.unify_schemas(self._schemas(parts), promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            # A column changed type between pipeline versions: leave the files apart (DuckDB still
            # reads them together).
            log.warning("not compacting %s: %s", folder, exc)
            return None

    def _write_merged(self, path: str, parts: list[str], schema: pa.Schema) -> None:
        """Write `parts` as one file, streaming: at most about MERGE_ROW_GROUP rows are in memory."""
        with pq.ParquetWriter(path, schema, filesystem=self.fs, compression="zstd") as writer:
            pending: list[pa.Table] = []
            rows = 0
            for part in parts:  # in write order, so the merged file is in time order
                # In batches: a part merged before can hold millions of rows (~0.7 GB unpacked).
                with self.fs.open_input_file(part) as raw, pq.ParquetFile(raw) as source:
                    for batch in source.iter_batches(batch_size=MERGE_ROW_GROUP):
                        pending.append(_conform(pa.Table.from_batches([batch]), schema))
                        rows += batch.num_rows
                        if rows >= MERGE_ROW_GROUP:
                            writer.write_table(pa.concat_tables(pending))
                            pending, rows = [], 0
            if pending:
                writer.write_table(pa.concat_tables(pending))

    # --- reading ------------------------------------------------------------------------------
    def _reading(self, body: Callable[[_Scan], T]) -> T:
        """`body(scan)` under the readers' lock; on an object store again when files it was given were
        merged away before it read them (a scan slower than the grace)."""
        attempts = 1 if self.local else READ_ATTEMPTS
        for attempt in range(1, attempts + 1):
            with self._locked(exclusive=False):
                scan = _Scan(self)
                try:
                    return body(scan)
                except (duckdb.Error, OSError):
                    if attempt == attempts or not scan.vanished():
                        raise
                    log.info("log files were merged away during a query: reading again")
                finally:
                    scan.close()
        raise AssertionError("unreachable")

    def query(
        self, workspace: str, pipeline: str, start: datetime, end: datetime, limit: int
    ) -> pa.Table:
        """The newest `limit` rows logged in [start, end), oldest first, with shadow columns joined."""

        def run(scan: _Scan) -> pa.Table:
            primary = scan.files(INFERENCES, workspace, pipeline, start, end)
            if not primary:
                return pa.table({})
            shadows = scan.files(SHADOWS, workspace, pipeline, start, end + SHADOW_LAG)
            scan.con.execute(
                f"CREATE TEMP TABLE p AS SELECT * FROM {scan.source(primary)} "
                "WHERE time >= ? AND time < ? ORDER BY time DESC, request_id, _row LIMIT ?",
                [start, end, limit],
            )
            select = "SELECT p.* EXCLUDE (_row)"
            joins = ""
            if shadows:
                select, joins = self._shadow_join(scan, shadows, select)
            return scan.con.sql(f"{select} FROM p{joins} ORDER BY p.time, p.request_id, p._row").to_arrow_table()

        return self._reading(run)

    @staticmethod
    def _shadow_join(scan: _Scan, files: list[str], select: str) -> tuple[str, str]:
        con = scan.con
        con.execute(
            f"CREATE TEMP TABLE s AS SELECT * FROM {scan.source(files)} WHERE request_id IN (SELECT request_id FROM p)"
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

        def run(scan: _Scan) -> list[str]:
            files = scan.files(INFERENCES, workspace, pipeline, start, end)
            if not files:
                return []
            return [str(row[0]) for row in scan.con.execute(f"DESCRIBE SELECT * FROM {scan.source(files)}").fetchall()]

        return self._reading(run)

    def values(
        self, workspace: str, pipeline: str, column: str, start: datetime, end: datetime
    ) -> tuple[np.ndarray, np.ndarray]:
        """(times as epoch microseconds, values as float64) of one numeric column in [start, end)."""

        def run(scan: _Scan) -> tuple[np.ndarray, np.ndarray]:
            files = scan.files(INFERENCES, workspace, pipeline, start, end)
            if not files:
                return np.empty(0, np.int64), np.empty(0, np.float64)
            result = scan.con.execute(
                f"SELECT epoch_us(time) AS t, CAST({_quote(column)} AS DOUBLE) AS v FROM {scan.source(files)} "
                f"WHERE time >= ? AND time < ? AND {_quote(column)} IS NOT NULL",
                [start, end],
            ).fetchnumpy()
            return np.asarray(result["t"], np.int64), np.asarray(result["v"], np.float64)

        return self._reading(run)


class _Scan:
    """One attempt at a query: its DuckDB connection and the log files it was given."""

    def __init__(self, store: LogStore) -> None:
        self.store = store
        self.con = connect()
        self.listed: list[str] = []
        self._views = 0

    def files(self, kind: str, workspace: str, pipeline: str, start: datetime, end: datetime) -> list[str]:
        found = self.store.files(kind, workspace, pipeline, start, end)
        self.listed.extend(found)
        return found

    def source(self, files: list[str]) -> str:
        """A SQL table expression reading `files` as one table, columns unioned by name."""
        if self.store.local:
            listed = ", ".join(_sql_string(f) for f in files)
            return f"read_parquet([{listed}], union_by_name=true, hive_partitioning=false)"
        # One pyarrow dataset per distinct file schema, unioned by name in DuckDB: the same column
        # matching and type promotion as read_parquet's union_by_name.
        groups: list[tuple[pa.Schema, list[str]]] = []
        for path, schema in zip(files, self.store._schemas(files), strict=True):
            schema = schema.remove_metadata()
            group = next((g for s, g in groups if s.equals(schema)), None)
            if group is None:
                groups.append((schema, [path]))
            else:
                group.append(path)
        views = []
        for schema, paths in groups:
            view = f"logs_{self._views}"
            self._views += 1
            self.con.register(view, ds.dataset(paths, schema=schema, filesystem=self.store.fs, format="parquet"))
            views.append(f"SELECT * FROM {view}")
        return "(" + " UNION ALL BY NAME ".join(views) + ")"

    def vanished(self) -> bool:
        """Whether a file this attempt was given is gone now."""
        infos = self.store.fs.get_file_info(self.listed)
        return any(info.type == pafs.FileType.NotFound for info in infos)

    def close(self) -> None:
        self.con.close()


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
