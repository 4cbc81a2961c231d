"""Shadow traffic: mirror requests to shadow variants without ever holding up the primary reply."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow as pa

from pipelines.frame import Data, as_table
from serving.errors import as_domain_error
from serving.segments import inline_steps_in

log = logging.getLogger("corral.shadows")

DROPPED = "dropped"
RunChain = Callable[[str, Data], Awaitable[Data]]


@dataclass(frozen=True)
class ShadowOutcome:
    """What one shadow variant made of one request: its output table, or the error it raised."""

    request_id: str
    variant: str
    rows: int
    output: pa.Table | None
    error: str | None

    @property
    def num_rows(self) -> int:
        return self.output.num_rows if self.output is not None else self.rows

    @property
    def kind(self) -> str:
        """`ok`, `error` (failed or timed out) or `dropped` (backlog full, never called)."""
        if self.error is None:
            return "ok"
        return "dropped" if self.error.startswith(DROPPED) else "error"


ShadowListener = Callable[[ShadowOutcome], None]


class ShadowRunner:
    """Fire-and-forget shadow calls with a bounded backlog per router replica.

    A slow shadow would otherwise queue without bound (measured: 694 of 5,000 calls to a 0.5 s
    shadow had run when the load stopped), so calls beyond `max_in_flight` are dropped and counted.
    A shadow gets at most `timeout_s`; its errors and timeouts are outcomes, never exceptions.
    """

    def __init__(
        self,
        run_chain: RunChain,
        *,
        max_in_flight: int = 64,
        timeout_s: float = 30.0,
        executor: Executor | None = None,
    ) -> None:
        self.run_chain = run_chain
        # Inline steps of shadows run in these threads, never in the ones the primary uses.
        self.executor = executor or ThreadPoolExecutor(4, thread_name_prefix="corral-shadow")
        self.max_in_flight = max_in_flight
        self.timeout_s = timeout_s
        self.listeners: list[ShadowListener] = []
        self.tasks: set[asyncio.Task[None]] = set()  # strong references: the loop only keeps weak ones
        self.counts: Counter[str] = Counter()

    def fire(self, variant: str, table: Data, request_id: str) -> bool:
        """Start one shadow call; False (and counted as dropped) when the backlog is full."""
        if len(self.tasks) >= self.max_in_flight:
            self.counts[f"{variant}.dropped"] += 1
            self._tell(ShadowOutcome(request_id, variant, table.num_rows, None, f"{DROPPED}: shadow backlog full"))
            return False
        task = asyncio.get_running_loop().create_task(self._run(variant, table, request_id))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return True

    async def _run(self, variant: str, table: Data, request_id: str) -> None:
        try:
            with inline_steps_in(self.executor):
                output = await asyncio.wait_for(self.run_chain(variant, table), self.timeout_s)
        except TimeoutError:
            self.counts[f"{variant}.error"] += 1
            error = f"timed out after {self.timeout_s:g} s"
            self._tell(ShadowOutcome(request_id, variant, table.num_rows, None, error))
        except Exception as exc:  # a shadow's failure is data for the log, never the caller's problem
            self.counts[f"{variant}.error"] += 1
            self._tell(ShadowOutcome(request_id, variant, table.num_rows, None, as_domain_error(exc).message))
        else:
            self.counts[f"{variant}.ok"] += 1
            self._tell(ShadowOutcome(request_id, variant, table.num_rows, as_table(output), None))

    def _tell(self, outcome: ShadowOutcome) -> None:
        for listener in self.listeners:
            try:
                listener(outcome)
            except Exception:
                log.exception("shadow listener failed")

    def stats(self) -> dict[str, int]:
        """Counts of shadow outcomes by `<variant>.ok|error|dropped`, plus calls in flight."""
        return {**self.counts, "in_flight": len(self.tasks)}

    async def drain(self, timeout_s: float | None = None) -> None:
        """Wait for the shadow calls in flight (the router does on shutdown, so their outcomes get logged)."""
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=self.timeout_s + 1.0 if timeout_s is None else timeout_s)
