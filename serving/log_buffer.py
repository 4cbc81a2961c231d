"""Router-side batching of log rows, so logging never waits on, slows or fails an inference."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import pyarrow as pa

log = logging.getLogger("corral.logbuffer")

Send = Callable[[str, pa.Table], Awaitable[Any]]


class Rows(Protocol):
    """Anything that stands for log rows: a table, or a request's record turned into rows at flush."""

    @property
    def num_rows(self) -> int: ...


Build = Callable[[str, list[Any]], list[pa.Table]]


def concat_tables(kind: str, tables: list[Any]) -> list[pa.Table]:
    """The default `build`: the queued items are tables already."""
    return _concat(tables)


class Ledger(Protocol):
    """Counts rows queued and done with (sent or dropped), e.g. serving.log_ledger.LogLedger."""

    def queued(self, rows: int) -> None: ...

    def done(self, rows: int) -> None: ...


class LogBuffer:
    """Collects rows per kind and sends them in one call every `delay_s` (or at `max_rows`).

    Items are turned into tables by `build(kind, items)` only when they are sent, so a request
    pays for appending its record, not for building its log rows.

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
        build: Build = concat_tables,
        ledger: Ledger | None = None,
    ) -> None:
        self.send = send
        self.ledger = ledger
        self.build = build
        self.on_drop = on_drop
        self.delay_s = delay_s
        self.max_rows = max_rows
        self.max_backlog_rows = max_backlog_rows
        self.pending: dict[str, list[Any]] = {}
        self.unsent: dict[str, list[pa.Table]] = {}  # built, refused by the sink, sent first next time
        self.pending_rows = 0
        self.flusher: asyncio.Task[None] | None = None
        self.counts: Counter[str] = Counter()
        self.lock = asyncio.Lock()

    def add(self, kind: str, rows: Rows) -> None:
        """Queue rows for the sink; returns at once."""
        self.pending.setdefault(kind, []).append(rows)
        self.pending_rows += rows.num_rows
        if self.ledger is not None:
            self.ledger.queued(rows.num_rows)
        self._trim()
        if self.flusher is None or self.flusher.done():
            delay = 0.0 if self.pending_rows >= self.max_rows else self.delay_s
            self.flusher = asyncio.get_running_loop().create_task(self._flush_after(delay))

    def _trim(self) -> None:
        while self.pending_rows > self.max_backlog_rows:
            queues = [q for q in (*self.unsent.values(), *self.pending.values()) if q]
            dropped = max(queues, key=len).pop(0)  # the oldest rows of the longest queue
            self.pending_rows -= dropped.num_rows
            self._count_drop(dropped.num_rows)

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
            retries, self.unsent = self.unsent, {}
            sent_all = True
            for kind in {**retries, **batches}:
                tables = retries.get(kind, []) + self._build(kind, batches.get(kind, []))
                for i, batch in enumerate(tables):
                    try:
                        await self.send(kind, batch)
                    except Exception as exc:
                        sent_all = False
                        self.counts["send_failures"] += 1
                        log.warning("could not send %d log rows to the sink (will retry): %s", batch.num_rows, exc)
                        self.unsent[kind] = tables[i:]  # in order: the rest waits behind the refused batch
                        break
                    self.counts["rows_sent"] += batch.num_rows
                    self.pending_rows -= batch.num_rows
                    if self.ledger is not None:
                        self.ledger.done(batch.num_rows)
            return sent_all

    def _build(self, kind: str, items: list[Any]) -> list[pa.Table]:
        if not items:
            return []
        try:
            return self.build(kind, items)
        except Exception:  # rows that cannot be built are lost and counted, but never the buffer
            rows = sum(i.num_rows for i in items)
            log.exception("could not build %d log rows of %s", rows, kind)
            self.pending_rows -= rows
            self._count_drop(rows)
            return []

    def _count_drop(self, rows: int) -> None:
        self.counts["rows_dropped"] += rows
        if self.ledger is not None:
            self.ledger.done(rows)
        if self.on_drop is not None:
            self.on_drop(rows)

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
