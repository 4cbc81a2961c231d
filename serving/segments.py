"""Segments: the pieces a variant's chain is cut into (see pipelines.placement).

An inline segment runs its step objects in-process, one after another; the deployments module
supplies remote segments (a chain of step deployments behind handles). Both are `Segment`s:
`await segment(table) -> table`, so the data plane never knows where a step runs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import Executor
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import partial

import pyarrow as pa

from pipelines.errors import CorralError
from pipelines.frame import Data, as_table
from pipelines.step import Step, call_step, is_async_step, run_step_sync

# A segment takes a request's table, or its Frame on the fast path (pipelines.frame), and gives
# back either; segments that need Arrow (remote ones) convert with as_table.
Segment = Callable[[Data], Awaitable[Data]]

# The thread pool inline steps of the current task run in (None: the loop's default pool).
_executor: ContextVar[Executor | None] = ContextVar("corral_inline_executor", default=None)


@contextmanager
def inline_steps_in(executor: Executor) -> Iterator[None]:
    """Run the inline steps of the work started in this block in `executor`: shadows use a pool of
    their own, so a slow shadow step can never hold the primary's worker threads."""
    token = _executor.set(executor)
    try:
        yield
    finally:
        _executor.reset(token)


# A run of non-blocking steps on a table this small costs less than handing it to a worker thread
# and back (measured here: a thread hop plus the GIL hand-offs under load cost more than the
# ~0.3 ms the demo's three steps take on one row), so it runs on the event loop itself.
LOOP_MAX_ROWS = 64


def non_blocking(step: Step) -> bool:
    """True for steps that only compute, briefly per row (built-ins, ONNX on CPU): they may run on
    the event loop for small tables. User code might sleep or do I/O: it always gets a thread."""
    return bool(getattr(step, "non_blocking", False))


@dataclass(frozen=True)
class _Run:
    """Consecutive steps run the same way: sync steps together in one worker thread, or one async step."""

    steps: tuple[tuple[str, Step], ...]
    is_async: bool
    may_run_on_loop: bool  # sync and non-blocking throughout: small tables skip the thread hop


def _runs(steps: Sequence[tuple[str, Step]]) -> tuple[_Run, ...]:
    runs: list[_Run] = []
    for name, step in steps:
        is_async = is_async_step(step)
        if runs and not is_async and not runs[-1].is_async:
            last = runs[-1]
            runs[-1] = _Run((*last.steps, (name, step)), False, last.may_run_on_loop and non_blocking(step))
        else:
            runs.append(_Run(((name, step),), is_async, not is_async and non_blocking(step)))
    return tuple(runs)


def _run_sync(steps: tuple[tuple[str, Step], ...], table: Data) -> tuple[Data, list[float]]:
    """Run sync steps on this thread; also returns each step's milliseconds."""
    timings = []
    for name, step in steps:
        started = time.perf_counter()
        table = run_step_sync(step, table, step_name=name)
        timings.append((time.perf_counter() - started) * 1000)
    return table, timings


# observe(step name, milliseconds): how long each inline step took (Prometheus in a replica).
StepObserver = Callable[[str, float], None]


class InlineSegment:
    """Steps run in-process. Sync steps (onnxruntime, pyarrow) run off the event loop, all the
    consecutive ones in one worker-thread call: one thread hop per segment, not per step; runs of
    non-blocking steps on small tables run on the loop (see LOOP_MAX_ROWS)."""

    takes_frames = True  # steps get the request's Frame (pipelines.step.run_step_sync)

    def __init__(
        self,
        steps: Sequence[tuple[str, Step]],
        observe: StepObserver | None = None,
        executor: Executor | None = None,
    ) -> None:
        self.runs = _runs(steps)
        self.observe = observe
        self.executor = executor

    @property
    def steps(self) -> dict[str, Step]:
        return {name: step for run in self.runs for name, step in run.steps}

    def replace(self, name: str, step: Step) -> None:
        """Swap one step object (a hot-swapped model). A request in flight keeps the runs it started
        with, so it finishes on the old object; the next one gets the new one."""
        steps = self.steps
        if name not in steps:
            raise KeyError(name)
        steps[name] = step
        self.runs = _runs(list(steps.items()))

    @property
    def is_sync(self) -> bool:
        return not any(run.is_async for run in self.runs)

    def run_sync(self, table: Data) -> Data:
        """Run every step on the calling thread (a caller already off the event loop, such as an
        explainer's worker thread); only for segments without async steps (`is_sync`)."""
        for run in self.runs:
            if run.is_async:
                raise TypeError("run_sync on a segment with async steps: await the segment instead")
            table, timings = _run_sync(run.steps, table)
            self._observe(run, timings)
        return table

    async def __call__(self, table: Data) -> Data:
        for run in self.runs:
            if run.is_async:
                name, step = run.steps[0]
                started = time.perf_counter()
                table = await call_step(step, table, step_name=name)
                timings = [(time.perf_counter() - started) * 1000]
            elif table.num_rows <= LOOP_MAX_ROWS and run.may_run_on_loop:
                table, timings = _run_sync(run.steps, table)
            else:
                loop = asyncio.get_running_loop()
                executor = _executor.get() or self.executor
                table, timings = await loop.run_in_executor(executor, partial(_run_sync, run.steps, table))
            self._observe(run, timings)
        return table

    def _observe(self, run: _Run, timings: list[float]) -> None:
        if self.observe is not None:
            for (name, _), ms in zip(run.steps, timings, strict=True):
                self.observe(name, ms)


async def run_segments(segments: Sequence[Segment], table: Data) -> Data:
    """A variant's chain: each segment's output is the next one's input. Only segments that say
    they take frames (`takes_frames`, as inline ones do) get a Frame; the others get its table."""
    for segment in segments:
        if not getattr(segment, "takes_frames", False):
            table = as_table(table)
        table = await segment(table)
    return table


class CoalescingSegment:
    """Micro-batching in front of a remote segment, so concurrent requests share one hop.

    Up to `max_in_flight` calls go out at once; a request that finds them all busy waits, and
    when a call returns, the waiting requests of one schema go out together as one table (up to
    `max_rows`), their reply cut back into one slice each. A lone request never waits, so this
    costs nothing at low load. A batch that fails with a domain error is re-run request by
    request, so one bad request fails alone.
    """

    def __init__(
        self, inner: Callable[[pa.Table], Awaitable[pa.Table]], *, max_in_flight: int = 2, max_rows: int = 8192
    ) -> None:
        self.inner = inner
        self.max_in_flight = max_in_flight
        self.max_rows = max_rows
        self.in_flight = 0
        self.waiting: list[tuple[pa.Table, asyncio.Future[pa.Table]]] = []
        self.tasks: set[asyncio.Task[None]] = set()

    async def __call__(self, data: Data) -> pa.Table:
        table = as_table(data)  # batches are joined and cut as Arrow tables
        if self.in_flight < self.max_in_flight and not self.waiting:
            self.in_flight += 1
            try:
                return await self.inner(table)
            finally:
                self.in_flight -= 1
                self._dispatch()
        future: asyncio.Future[pa.Table] = asyncio.get_running_loop().create_future()
        self.waiting.append((table, future))
        return await future

    def _dispatch(self) -> None:
        self.waiting = [(t, f) for t, f in self.waiting if not f.done()]  # callers that gave up
        while self.waiting and self.in_flight < self.max_in_flight:
            schema = self.waiting[0][0].schema
            batch: list[tuple[pa.Table, asyncio.Future[pa.Table]]] = []
            rest: list[tuple[pa.Table, asyncio.Future[pa.Table]]] = []
            rows = 0
            for table, future in self.waiting:
                if table.schema.equals(schema) and (not batch or rows + table.num_rows <= self.max_rows):
                    batch.append((table, future))
                    rows += table.num_rows
                else:
                    rest.append((table, future))
            self.waiting = rest
            self.in_flight += 1
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _run(self, batch: list[tuple[pa.Table, asyncio.Future[pa.Table]]]) -> None:
        try:
            if len(batch) == 1:
                await _settle(batch[0][1], self.inner(batch[0][0]))
                return
            try:
                merged = await self.inner(pa.concat_tables([table for table, _ in batch]))
            except CorralError:
                for table, future in batch:  # one bad request must not fail its neighbours
                    await _settle(future, self.inner(table))
                return
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                return
            offset = 0
            for table, future in batch:
                if not future.done():
                    future.set_result(merged.slice(offset, table.num_rows))
                offset += table.num_rows
        finally:
            self.in_flight -= 1
            self._dispatch()


async def _settle(future: asyncio.Future[pa.Table], work: Awaitable[pa.Table]) -> None:
    try:
        result = await work
    except Exception as exc:
        if not future.done():
            future.set_exception(exc)
    else:
        if not future.done():
            future.set_result(result)
