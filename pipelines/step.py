"""The step protocol: what every pipeline step is, wherever it runs.

A step is a class built with one argument, its `config` dict, and called with an Arrow table; it
returns an Arrow table (sync or async). The same object runs in its own Serve deployment or
in-process, so step code never knows where it is.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol, overload, runtime_checkable

import pyarrow as pa

from pipelines.errors import CorralError, InvalidInput, StepFailed
from pipelines.frame import Data, Frame, as_table


@runtime_checkable
class Step(Protocol):
    """A pipeline step: `Step(config)` then `step(table) -> table` (may be a coroutine)."""

    def __call__(self, table: pa.Table) -> Any: ...


def import_step_class(import_path: str) -> type:
    """Import 'package.module:Class' and check it is a class; errors say how to fix the path."""
    module_name, _, class_name = import_path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any import-time failure of user code is the user's to fix
        raise InvalidInput(
            f"cannot import module {module_name!r} of step {import_path!r}: {exc}. Check the name, "
            "install the package, or upload the module and name it in the step's 'code:'"
        ) from exc
    cls = getattr(module, class_name, None)
    if not inspect.isclass(cls):
        raise InvalidInput(f"module {module_name!r} has no class {class_name!r} (step {import_path!r})")
    if not any("__call__" in vars(base) for base in cls.__mro__[:-1]):
        raise InvalidInput(f"step class {import_path!r} must define __call__(self, table) -> table")
    return cls


def build_step(import_path: str, config: dict[str, Any]) -> Step:
    """Instantiate a Python step; a bad config becomes an InvalidInput, not a crash."""
    cls = import_step_class(import_path)
    try:
        return cls(config)  # type: ignore[no-any-return]
    except CorralError:
        raise
    except (TypeError, ValueError, KeyError) as exc:
        raise InvalidInput(f"step {import_path!r} rejected its config {config!r}: {exc}") from exc


async def call_step(step: Step, table: Data, *, step_name: str) -> pa.Table:
    """Run one step on a table. Sync steps run in a worker thread so the event loop stays free."""
    if isinstance(table, Frame):
        table = table.to_arrow()
    if not is_async_step(step):
        return as_table(await asyncio.to_thread(run_step_sync, step, table, step_name=step_name))
    with step_errors(step_name):
        result = await step(table)
    return checked_result(result, table.num_rows, step_name)


def run_step_sync(step: Step, table: Data, *, step_name: str) -> Data:
    """Run a synchronous step on this thread, with the error handling and checks of `call_step`.

    A Frame goes to the step's `on_frame` (the fast path of built-in and ONNX steps); when the step
    has none, or its `on_frame` answers None (a case the table path decides, errors included), the
    step gets the Frame's table: outputs never depend on the path."""
    if isinstance(table, Frame):
        on_frame = getattr(step, "on_frame", None)
        fast = _guarded(on_frame, table, step_name) if on_frame is not None else None
        if fast is not None:
            return checked_result(fast, table.num_rows, step_name)
        table = table.to_arrow()
    return checked_result(_guarded(step, table, step_name), table.num_rows, step_name)


def _guarded(call: Any, data: Data, step_name: str) -> Any:
    """`call(data)` with what step code raises turned into domain errors naming the step."""
    # try/except rather than `with step_errors()`: this runs per step per request, and a generator
    # context manager costs more than the built-in steps' own work on a small table.
    try:
        return call(data)
    except CorralError:
        raise
    except Exception as exc:
        raise step_error(step_name, exc) from exc


def step_error(step_name: str, exc: Exception) -> CorralError:
    """The domain error for what step code raised, naming the step."""
    if isinstance(exc, (pa.ArrowInvalid, pa.ArrowTypeError, KeyError, ValueError, TypeError)):
        # The usual shape of a caller's mistake reaching step code: a missing or mistyped column.
        return InvalidInput(f"step {step_name!r} could not process the input: {exc}")
    return StepFailed(f"step {step_name!r} failed: {type(exc).__name__}: {exc}. Fix the step's code")


@contextmanager
def step_errors(step_name: str) -> Iterator[None]:
    """Turn what step code raises into domain errors that name the step."""
    try:
        yield
    except CorralError:
        raise
    except Exception as exc:
        raise step_error(step_name, exc) from exc


def is_async_step(step: Step) -> bool:
    return inspect.iscoroutinefunction(type(step).__call__)


@overload
def checked_result(result: Frame, rows: int, step_name: str) -> Frame: ...
@overload
def checked_result(result: Any, rows: int, step_name: str) -> pa.Table: ...
def checked_result(result: Any, rows: int, step_name: str) -> Data:
    """A step's result as a table (or a Frame from a fast path) with one row per input row, or a
    StepFailed naming the step.

    Rows map one to one through a pipeline: replies, log rows and micro-batches rely on it.
    """
    if isinstance(result, pa.RecordBatch):
        result = pa.Table.from_batches([result])
    if not isinstance(result, pa.Table | Frame):
        raise StepFailed(
            f"step {step_name!r} returned {type(result).__name__}, not a pyarrow.Table: make the step return a table"
        )
    if result.num_rows != rows:
        raise StepFailed(
            f"step {step_name!r} returned {result.num_rows} rows for {rows} input rows: a step must return "
            "one row per input row (add columns, never drop or add rows)"
        )
    return result
