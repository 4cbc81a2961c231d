"""The transport-free core of a pipeline's router: pick a variant, mirror shadows, run the chain, log.

Everything that needs Ray or HTTP is passed in: the segments (inline ones run here, remote ones
wrap handles), where log records go, and the telemetry. Tests drive it with real steps in-process.
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import pyarrow as pa

from monitoring.log_schema import InferenceRecord
from pipelines.errors import InvalidInput, NotReady
from pipelines.frame import Data, Frame, as_table
from pipelines.live_config import RouterConfig
from pipelines.traffic import TrafficPolicy
from serving.segments import Segment, run_segments
from serving.shadows import ShadowRunner


class Telemetry(Protocol):
    """Where the data plane reports what it did (Prometheus metrics in a Serve replica)."""

    def served(self, variant: str, rows: int, latency_ms: float) -> None: ...


class NoTelemetry:
    def served(self, variant: str, rows: int, latency_ms: float) -> None:
        pass


@dataclass(frozen=True)
class Live:
    """One router config with its compiled traffic policy: swapped in one assignment."""

    config: RouterConfig
    policy: TrafficPolicy


@dataclass(frozen=True)
class Inference:
    request_id: str
    variant: str
    version: int
    outputs: Data  # a Frame when the whole chain ran on the fast path


class DataPlane:
    """Serves one pipeline: `infer` for traffic (logged, mirrored), `predict` for explainers (neither)."""

    def __init__(
        self,
        pipeline: str,
        chains: Mapping[str, Sequence[Segment]],
        *,
        log: Callable[[InferenceRecord], None],
        shadows: ShadowRunner | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.chains = dict(chains)
        self.log = log
        self.shadows = shadows or ShadowRunner(self.run_variant)
        self.telemetry = telemetry or NoTelemetry()
        self.live: Live | None = None
        # Request ids: 64 random bits per data plane, then a counter (uuid4 per request was 2% of
        # a router's CPU under load); 32 hex digits, unique across replicas and restarts.
        self.id_prefix = secrets.token_hex(8)
        self.ids = itertools.count()

    def apply(self, config: RouterConfig) -> None:
        """Make `config` live (traffic, version, metadata); raises ValueError for variants it lacks."""
        unknown = (set(config.traffic.weights) | set(config.traffic.shadows)) - set(self.chains)
        if unknown:
            raise ValueError(f"traffic names variants {sorted(unknown)} this app does not have")
        self.live = Live(config, TrafficPolicy.compile(config.traffic))

    @property
    def config(self) -> RouterConfig:
        if self.live is None:
            raise NotReady(f"pipeline {self.pipeline!r} is starting: retry shortly")
        return self.live.config

    def split_key(self, table: Data, header: str | None) -> str | None:
        """The request's split key: the header, else the key column's first row (a batch goes to one variant)."""
        if header:
            return header
        key = self.config.traffic.key
        if key is None or key not in table.column_names or table.num_rows == 0:
            return None
        if isinstance(table, Frame):
            return str(table.column(key)[0].tolist())  # the Python value, as as_py() gives it
        return str(table.column(key)[0].as_py())

    async def infer(self, table: Data, split_key: str | None = None) -> Inference:
        """Serve one request: logged, counted, and mirrored to the shadows (never awaited)."""
        if self.live is None:
            raise NotReady(f"pipeline {self.pipeline!r} is starting: retry shortly")
        live = self.live  # one config for the whole request, even if traffic changes meanwhile
        started_at, started = datetime.now(UTC), time.perf_counter()
        request_id = f"{self.id_prefix}{next(self.ids):016x}"
        variant = live.policy.pick(split_key)
        for shadow in live.policy.shadows:
            self.shadows.fire(shadow, table, request_id)
        outputs = await self.run_variant(variant, table)
        latency_ms = (time.perf_counter() - started) * 1000
        version = live.config.version
        self.log(InferenceRecord(started_at, request_id, version, variant, table, outputs, latency_ms))
        self.telemetry.served(variant, table.num_rows, latency_ms)
        return Inference(request_id, variant, version, outputs)

    async def run_variant(self, variant: str, table: Data) -> Data:
        return await run_segments(self.chains[variant], table)

    async def predict(self, table: pa.Table, variant: str) -> pa.Table:
        """One variant's chain, unlogged and not mirrored: for explainers, whose synthetic rows are not
        traffic (they would swamp the inference log and the assays)."""
        if variant not in self.chains:
            raise InvalidInput(
                f"pipeline {self.pipeline!r} has no variant {variant!r}: use one of {sorted(self.chains)}"
            )
        return as_table(await self.run_variant(variant, table))
