"""Router-side batching of log rows, so logging never waits on, slows or fails an inference."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import pyarrow as pa

log = logging.getLogger("corral.logbuffer")

Send = Callable[[str, pa.Table], Awaitable[Any]]


class LogBuffer:
    """Collects rows per kind and sends them in one call every `delay_s` (or at `max_rows`).

    What a router replica has not sent yet is all a crash of that replica can lose (at most
    `delay_s` of rows). When the sink is unreachable rows are kept, up to `max_backlog_rows`, and
    retried; beyond that the oldest are dropped and counted.
    """

    def __init__(
        self,
        send: Send,
        *,
        delay_s: float = 0.1,
        max_rows: int = 2_000,
        max_backlog_rows: int = 200_000,
        on_drop: Callable[[int], None] | None = None,
    ) -> None:
        self.send = send
        self.on_drop = on_drop
        self.delay_s = delay_s
        self.max_rows = max_rows
        self.max_backlog_rows = max_backlog_rows
        self.pending: dict[str, list[pa.Table]] = {}
        self.pending_rows = 0
        self.flusher: asyncio.Task[None] | None = None
        self.counts: Counter[str] = Counter()
        self.lock = asyncio.Lock()

    def add(self, kind: str, rows: pa.Table) -> None:
        """Queue rows for the sink; returns at once."""
        self.pending.setdefault(kind, []).append(rows)
        self.pending_rows += rows.num_rows
        self._trim()
        if self.flusher is None or self.flusher.done():
            delay = 0.0 if self.pending_rows >= self.max_rows else self.delay_s
            self.flusher = asyncio.get_running_loop().create_task(self._flush_after(delay))

    def _trim(self) -> None:
        while self.pending_rows > self.max_backlog_rows:
            kind = max(self.pending, key=lambda k: len(self.pending[k]))
            dropped = self.pending[kind].pop(0)
            self.pending_rows -= dropped.num_rows
            self.counts["rows_dropped"] += dropped.num_rows
            if self.on_drop is not None:
                self.on_drop(dropped.num_rows)

    async def _flush_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        if not await self.flush():
            await asyncio.sleep(1.0)  # the sink is down or restarting: back off, then try again
        if self.pending_rows and (self.flusher is None or self.flusher is asyncio.current_task()):
            self.flusher = asyncio.get_running_loop().create_task(self._flush_after(self.delay_s))

    async def flush(self) -> bool:
        """Send everything pending now; False if the sink refused (the rows stay pending)."""
        async with self.lock:
            batches, self.pending = self.pending, {}
            sent_all = True
            for kind, tables in batches.items():
                unsent: list[pa.Table] = []
                for batch in _concat(tables):
                    try:
                        await self.send(kind, batch)
                        self.counts["rows_sent"] += batch.num_rows
                        self.pending_rows -= batch.num_rows
                    except Exception as exc:
                        sent_all = False
                        self.counts["send_failures"] += 1
                        log.warning("could not send %d log rows to the sink (will retry): %s", batch.num_rows, exc)
                        unsent.append(batch)
                if unsent:
                    self.pending.setdefault(kind, [])[:0] = unsent
            return sent_all

    def stats(self) -> dict[str, int]:
        return {**self.counts, "rows_pending": self.pending_rows}


def _concat(tables: list[pa.Table]) -> list[pa.Table]:
    """One table when the schemas can be unified (missing columns become nulls), else them as they are."""
    if len(tables) == 1:
        return tables
    try:
        return [pa.concat_tables(tables, promote_options="permissive")]
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # a column changed type between versions
        return tables
