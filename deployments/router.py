"""The pipeline's ingress: authenticates, decodes, picks a variant, runs its chain, encodes the reply."""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
import pandas as pd
import pyarrow as pa
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.requests import Request
from starlette.responses import Response

from deployments.errors import as_domain_error, error_parts
from deployments.log_buffer import LogBuffer
from deployments.metrics import metric
from deployments.names import (
    CONTROL_APP,
    CONTROL_DEPLOYMENT,
    LOG_SINK_DEPLOYMENT,
    LOGS_APP,
    PROBE_HEADER,
    route_prefix,
)
from deployments.shadows import ShadowOutcome, ShadowRunner
from monitoring.log_schema import inference_rows, shadow_rows
from monitoring.log_store import INFERENCES, SHADOWS
from monitoring.metrics import (
    LOG_ROWS_DROPPED,
    REQUEST_LATENCY,
    REQUESTS,
    ROWS,
    SHADOW_CALLS,
)
from pipelines.codecs import decode_request, encode_response
from pipelines.errors import CorralError, InvalidInput, NotFound, PayloadTooLarge
from pipelines.rules import parse_rules
from pipelines.spec import TrafficSpec
from pipelines.traffic import TrafficPolicy

log = logging.getLogger("corral.router")

AUTH_TTL_S = 30.0
DENIED_TTL_S = 2.0


class RouterConfig:
    """The router's live settings, delivered as Serve `user_config` (changes need no restart)."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.version = int(raw["version"])
        self.config_id: str = raw.get("config_id", "")
        self.traffic = TrafficSpec.model_validate(raw["traffic"])
        self.policy = TrafficPolicy.compile(self.traffic)
        self.probe_hash: str = raw.get("probe_hash", "")
        self.metadata: dict[str, Any] = raw.get("metadata", {})
        self.validations: dict[str, str] = raw.get("validations", {})
        parse_rules(self.validations)  # a config with a broken validation fails here, not per request


@serve.deployment(max_ongoing_requests=1000)
class PipelineRouter:
    """Ingress deployment of one pipeline application (HTTP and Python handle callers)."""

    def __init__(
        self, workspace: str, pipeline: str, chains: dict[str, list[DeploymentHandle]], max_payload_bytes: int
    ) -> None:
        self.workspace = workspace
        self.pipeline = pipeline
        self.prefix = route_prefix(workspace, pipeline)
        self.chains = chains
        self.max_payload_bytes = max_payload_bytes
        self.control = serve.get_deployment_handle(CONTROL_DEPLOYMENT, app_name=CONTROL_APP)
        self.auth_cache: dict[str, tuple[float, CorralError | None]] = {}
        self.config: RouterConfig | None = None
        self.shadows = ShadowRunner(self._run_chain)
        self.sink = serve.get_deployment_handle(LOG_SINK_DEPLOYMENT, app_name=LOGS_APP)
        self.tags = {"workspace": workspace, "pipeline": pipeline}
        self.logs = LogBuffer(self._send_logs, on_drop=self._count_dropped_logs)
        # Validations are evaluated by the sink, a batch at a time (640 us per single-row request here):
        # rows are queued under "<kind>:<pipeline version>" so each batch goes with its version's rules.
        self.validations_of: dict[str, dict[str, str]] = {}
        self.shadows.listeners.append(self._log_shadow)

    def _count_dropped_logs(self, rows: int) -> None:
        metric(LOG_ROWS_DROPPED).inc(rows, self.tags)

    async def _send_logs(self, key: str, rows: pa.Table) -> None:
        kind = key.partition(":")[0]
        validations = self.validations_of.get(key, {})
        await self.sink.append.remote(kind, self.workspace, self.pipeline, rows, validations)

    async def __del__(self) -> None:
        """Serve calls this on graceful shutdown (undeploy, `corral down`): nothing logged is lost."""
        await self.shadows.drain(timeout_s=5.0)
        await self.logs.flush()

    def reconfigure(self, raw: dict[str, Any]) -> None:
        config = RouterConfig(raw)
        unknown = set(config.policy.variants) | set(config.traffic.shadows)
        if not unknown <= set(self.chains):
            raise ValueError(f"traffic names variants {sorted(unknown - set(self.chains))} this app does not have")
        self.config = config

    # --- HTTP -----------------------------------------------------------------------------------
    async def __call__(self, request: Request) -> Response:
        headers = {k.lower(): v for k, v in request.headers.items()}
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_payload_bytes:
            status, reply_headers, payload = error_parts(self._too_large(int(length)))
        else:
            body = await request.body()
            status, reply_headers, payload = await self.handle_http(request.method, request.url.path, headers, body)
        return Response(payload, status_code=status, headers=reply_headers)

    async def handle_http(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        """One HTTP request as plain parts (lower-case header names), so the control app can forward
        requests here through a handle while the HTTP proxy catches up with a new route."""
        assert self.config is not None
        config = self.config
        suffix = path[len(self.prefix) :] if path.startswith(self.prefix) else path
        suffix = suffix.rstrip("/")
        try:
            if suffix.startswith("/versions/"):
                suffix = self._strip_version(suffix, config)
            if suffix == "/ready" and method == "GET":
                probe = headers.get(PROBE_HEADER)
                if not (probe and hashlib.sha256(probe.encode()).hexdigest() == config.probe_hash):
                    await self._authorize(headers)
                return _json(
                    {"name": self.pipeline, "ready": True, "version": config.version, "config_id": config.config_id}
                )
            await self._authorize(headers)
            if suffix == "/infer" and method == "POST":
                reply = await self._infer_http(headers, body, config)
                self._count_request(reply[0], reply[1].get("x-corral-variant", ""))
                return reply
            if suffix == "" and method == "GET":
                return _json(config.metadata)
            raise NotFound(
                f"no endpoint {method} {path}: use GET {self.prefix}, GET {self.prefix}/ready "
                f"or POST {self.prefix}/infer"
            )
        except CorralError as exc:
            reply = error_parts(exc, _reply_headers(config, None))
            if suffix == "/infer":
                self._count_request(reply[0], "")
            return reply

    def _count_request(self, status: int, variant: str) -> None:
        metric(REQUESTS).inc(1, {**self.tags, "variant": variant, "status": str(status)})

    def _too_large(self, size: int) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"payload of {size} bytes is over the limit of {self.max_payload_bytes}: send smaller "
            "batches, or raise CORRAL_MAX_PAYLOAD_BYTES"
        )

    def _strip_version(self, suffix: str, config: RouterConfig) -> str:
        _, _, version, *rest = suffix.split("/")
        if version != str(config.version):
            raise NotFound(
                f"pipeline {self.pipeline!r} serves version {config.version}, not {version}: "
                "call it without /versions/N or deploy that version"
            )
        return "/" + "/".join(rest) if rest else ""

    async def _authorize(self, headers: dict[str, str]) -> None:
        header = headers.get("authorization", "")
        token = header[7:].strip() if header[:7].lower() == "bearer " else ""
        token_hash = hashlib.sha256(token.encode()).hexdigest() if token else ""
        now = time.monotonic()
        cached = self.auth_cache.get(token_hash)
        if cached is None or cached[0] < now:
            try:
                await self.control.verify_access.remote(token_hash, self.workspace, self.pipeline)
                cached = (now + AUTH_TTL_S, None)
            except Exception as exc:
                error = as_domain_error(exc)
                cached = (now + DENIED_TTL_S, error)
            if len(self.auth_cache) > 10_000:
                self.auth_cache.clear()
            self.auth_cache[token_hash] = cached
        if cached[1] is not None:
            raise cached[1]

    async def _infer_http(
        self, headers: dict[str, str], body: bytes, config: RouterConfig
    ) -> tuple[int, dict[str, str], bytes]:
        started = (datetime.now(UTC), time.perf_counter())
        if len(body) > self.max_payload_bytes:
            raise self._too_large(len(body))
        decoded = decode_request(body, headers.get("content-type"), headers, max_bytes=self.max_payload_bytes)
        split_key = headers.get("x-corral-split-key") or _key_from_table(decoded.table, config.traffic.key)
        request_id = uuid.uuid4().hex
        variant, result = await self._serve(decoded.table, split_key, config, request_id, started)
        payload, reply_headers = encode_response(
            result,
            decoded,
            model_name=self.pipeline,
            model_version=str(config.version),
            parameters={"variant": variant},
        )
        reply_headers.update(_reply_headers(config, variant))
        reply_headers["x-corral-request-id"] = request_id
        return 200, reply_headers, payload

    async def _serve(
        self,
        table: pa.Table,
        split_key: str | None,
        config: RouterConfig,
        request_id: str,
        started: tuple[datetime, float],
    ) -> tuple[str, pa.Table]:
        """Pick the variant, mirror the request to the shadows (never awaited), run the primary, log it."""
        variant = config.policy.pick(split_key)
        for shadow in config.policy.shadows:
            self.shadows.fire(shadow, table, request_id)
        result = await self._run_chain(variant, table)
        self._log_inference(config, request_id, variant, table, result, started)
        return variant, result

    def _log_inference(
        self,
        config: RouterConfig,
        request_id: str,
        variant: str,
        inputs: pa.Table,
        outputs: pa.Table,
        started: tuple[datetime, float],
    ) -> None:
        try:
            rows = inference_rows(
                time=started[0],
                request_id=request_id,
                version=config.version,
                variant=variant,
                inputs=inputs,
                outputs=outputs,
                latency_ms=(time.perf_counter() - started[1]) * 1000,
            )
            tags = {**self.tags, "variant": variant}
            metric(ROWS).inc(rows.num_rows, tags)
            metric(REQUEST_LATENCY).observe(rows.column("latency_ms")[0].as_py(), tags)
            key = f"{INFERENCES}:{config.version}"
            self.validations_of[key] = config.validations
            self.logs.add(key, rows)
        except Exception:  # a reply the client is owed never fails because of its log row
            log.exception("could not build the log rows of request %s", request_id)

    def _log_shadow(self, outcome: ShadowOutcome) -> None:
        metric(SHADOW_CALLS).inc(1, {**self.tags, "variant": outcome.variant, "outcome": outcome.kind})
        rows = shadow_rows(
            time=datetime.now(UTC),
            request_id=outcome.request_id,
            variant=outcome.variant,
            rows=outcome.rows,
            output=outcome.output,
            error=outcome.error,
        )
        self.logs.add(SHADOWS, rows)

    async def _run_chain(self, variant: str, table: pa.Table) -> pa.Table:
        chain = self.chains[variant]
        try:
            response = chain[0].remote(table)
            for handle in chain[1:]:
                response = handle.remote(response)  # Serve passes the result on without a round trip here
            result: pa.Table = await response
        except Exception as exc:
            raise as_domain_error(exc) from exc
        return result

    # --- Python callers holding a handle ----------------------------------------------------------
    async def infer(self, data: Any, split_key: str | None = None) -> Any:
        """Run the pipeline on a pyarrow.Table, pandas.DataFrame or dict of columns; same type back."""
        assert self.config is not None
        config = self.config
        if isinstance(data, pa.Table):
            table = data
        elif isinstance(data, pd.DataFrame):
            table = pa.Table.from_pandas(data, preserve_index=False)
        elif isinstance(data, dict):
            table = pa.table(data)
        else:
            raise InvalidInput(
                f"infer() takes a pyarrow.Table, pandas.DataFrame or dict of columns, not {type(data).__name__}"
            )
        key = split_key or _key_from_table(table, config.traffic.key)
        started = (datetime.now(UTC), time.perf_counter())
        _, result = await self._serve(table, key, config, uuid.uuid4().hex, started)
        if isinstance(data, pd.DataFrame):
            return result.to_pandas()
        if isinstance(data, dict):
            return result.to_pydict()
        return result

    async def predict(self, table: pa.Table, variant: str) -> pa.Table:
        """Run one variant's chain on a table, unlogged: for explainers, whose synthetic rows are not
        traffic (they would swamp the inference log and the assays), and not mirrored to shadows."""
        if variant not in self.chains:
            raise InvalidInput(
                f"pipeline {self.pipeline!r} has no variant {variant!r}: use one of {sorted(self.chains)}"
            )
        return await self._run_chain(variant, table)

    async def info(self) -> dict[str, Any]:
        """What this replica serves: version, traffic and metadata (for tests and operators)."""
        assert self.config is not None
        return {
            "version": self.config.version,
            "traffic": self.config.traffic.model_dump(),
            "metadata": self.config.metadata,
            "config_id": self.config.config_id,
            "shadows": self.shadows.stats(),
            "logs": self.logs.stats(),
        }


def _key_from_table(table: pa.Table, key: str | None) -> str | None:
    if key is None or key not in table.column_names or table.num_rows == 0:
        return None
    # A batch goes to one variant, chosen by its first row's key.
    return str(table.column(key)[0].as_py())


def _reply_headers(config: RouterConfig, variant: str | None) -> dict[str, str]:
    headers = {"x-corral-pipeline-version": str(config.version)}
    if variant is not None:
        headers["x-corral-variant"] = variant
    return headers


def _json(payload: Any, status: int = 200) -> tuple[int, dict[str, str], bytes]:
    return status, {"content-type": "application/json"}, orjson.dumps(payload)
