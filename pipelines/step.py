"""The step protocol: what every pipeline step is, wherever it runs.

A step is a class built with one argument, its `config` dict, and called with an Arrow table; it
returns an Arrow table (sync or async). The same object runs in its own Serve deployment or
in-process, so step code never knows where it is.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
from typing import Any, Protocol, runtime_checkable

import pyarrow as pa

from pipelines.errors import CorralError, InvalidInput, StepFailed


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


async def call_step(step: Step, table: pa.Table, *, step_name: str, in_thread: bool = True) -> pa.Table:
    """Run one step on a table. Sync steps run in a worker thread so the event loop stays free."""
    try:
        if inspect.iscoroutinefunction(type(step).__call__):
            result = await step(table)
        elif in_thread:
            result = await asyncio.to_thread(step, table)
            if inspect.isawaitable(result):
                result = await result
        else:
            result = step(table)
    except CorralError:
        raise
    except (pa.ArrowInvalid, pa.ArrowTypeError, KeyError, ValueError, TypeError) as exc:
        # The usual shape of a caller's mistake reaching step code: a missing or mistyped column.
        raise InvalidInput(f"step {step_name!r} could not process the input: {exc}") from exc
    except Exception as exc:
        raise StepFailed(f"step {step_name!r} failed: {type(exc).__name__}: {exc}") from exc
    if isinstance(result, pa.RecordBatch):
        result = pa.Table.from_batches([result])
    if not isinstance(result, pa.Table):
        raise StepFailed(
            f"step {step_name!r} returned {type(result).__name__}, not a pyarrow.Table: return a table"
        )
    return result
