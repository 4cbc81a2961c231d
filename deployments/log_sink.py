"""The log sink: one replica that writes every pipeline's inference-log batches to Parquet.

Routers send batches of rows (Arrow tables) every ~100 ms; each batch is written to its own
Parquet file at once (fsync + atomic rename), so a crash of the sink loses nothing it has
acknowledged. Small files are merged in the background and on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import pyarrow as pa
from ray import serve

from monitoring.log_store import LogStore

log = logging.getLogger("corral.logsink")

COMPACT_EVERY_S = 30.0


@serve.deployment(
    num_replicas=1,
    ray_actor_options={"num_cpus": 0.25},
    max_ongoing_requests=256,
    graceful_shutdown_timeout_s=60,
)
class LogSink:
    """Writes inference and shadow rows; `flush` merges small files (called by `corral down`)."""

    def __init__(self, root: str) -> None:
        self.store = LogStore(Path(root))
        self.rows_written = 0
        self.compactor: asyncio.Task[None] | None = None

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

    async def append(self, kind: str, workspace: str, pipeline: str, rows: pa.Table) -> int:
        """Write one batch of rows now; returns how many were written."""
        self._ensure_compactor()
        written = await asyncio.to_thread(self.store.write, kind, workspace, pipeline, rows)
        self.rows_written += written
        return written

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
