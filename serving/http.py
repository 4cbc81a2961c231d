"""The HTTP edge of a pipeline: paths, auth, size limits and codecs around the DataPlane.

Requests come as plain parts (method, path, lower-case headers, body) and leave as (status,
headers, body), so the same code serves Serve's HTTP proxy, the control app forwarding a request
through a handle, and tests. Domain errors become statuses here and nowhere deeper.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import Callable
from typing import Any

import orjson

from pipelines.codecs import decode_request, encode_response
from pipelines.errors import DeadlineExceeded, NotFound, PayloadTooLarge
from pipelines.live_config import RouterConfig
from serving.admission import Admission
from serving.auth import AuthCache
from serving.dataplane import DataPlane
from serving.errors import as_domain_error, error_parts

log = logging.getLogger("corral.http")
PROBE_HEADER = "x-corral-probe"  # the deployer's readiness probe skips auth with a secret
Reply = tuple[int, dict[str, str], bytes]
# count(status, variant): every /infer request, answered or refused.
CountRequest = Callable[[int, str], None]


class HttpEdge:
    """`handle(method, path, headers, body)` for the routes under one pipeline's prefix."""

    def __init__(
        self,
        plane: DataPlane,
        auth: AuthCache,
        *,
        prefix: str,
        max_payload_bytes: int,
        count_request: CountRequest | None = None,
        admission: Admission | None = None,
        frames: bool = True,
    ) -> None:
        self.plane = plane
        self.frames = frames  # the fast path (pipelines.frame); off only to compare the two paths
        self.admission = admission
        self.auth = auth
        self.prefix = prefix
        self.max_payload_bytes = max_payload_bytes
        self.count_request = count_request or (lambda status, variant: None)

    def too_large(self, size: int) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"payload of {size} bytes is over the limit of {self.max_payload_bytes}: send smaller "
            "batches, or raise CORRAL_MAX_PAYLOAD_BYTES"
        )

    def refuse_early(self, headers: dict[str, str]) -> Reply | None:
        """A reply before the body is read, when the declared Content-Length is over the limit."""
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_payload_bytes:
            return error_parts(self.too_large(int(length)))
        return None

    async def handle(
        self, method: str, path: str, headers: dict[str, str], body: bytes, arrived_at: float | None = None
    ) -> Reply:
        """One request; `arrived_at` (time.monotonic) when the caller knows when it arrived, else
        now (less the event loop's delay): its deadline counts from then."""
        if arrived_at is None and self.admission is not None:
            arrived_at = self.admission.arrival()
        suffix = (path[len(self.prefix) :] if path.startswith(self.prefix) else path).rstrip("/")
        is_infer = suffix.endswith("/infer")
        try:
            config = self.plane.config
            if suffix.startswith("/versions/"):
                suffix = self._strip_version(suffix, config)
            if suffix == "/infer" and method == "POST":
                await self.auth.authorize(headers)
                return await self._admitted_infer(headers, body, config, arrived_at)
            if suffix == "/ready" and method == "GET":
                probe = headers.get(PROBE_HEADER)
                digest = hashlib.sha256(probe.encode()).hexdigest() if probe else ""
                if not (probe and hmac.compare_digest(digest, config.probe_hash)):  # constant time
                    await self.auth.authorize(headers)
                ready = {"name": self.plane.pipeline, "ready": True, "version": config.version}
                return _json({**ready, "config_id": config.config_id})
            await self.auth.authorize(headers)
            if suffix == "" and method == "GET":
                return _json(config.metadata)
            raise NotFound(
                f"no endpoint {method} {path}: use GET {self.prefix}, GET {self.prefix}/ready "
                f"or POST {self.prefix}/infer"
            )
        except Exception as exc:  # every error leaves as JSON with its status, never as a traceback
            error = as_domain_error(exc)
            live = self.plane.live
            reply = error_parts(error, _version_header(live.config) if live else None)
            if is_infer:
                self.count_request(reply[0], "")
            return reply

    async def _admitted_infer(
        self, headers: dict[str, str], body: bytes, config: RouterConfig, arrived_at: float | None
    ) -> Reply:
        """`_infer` within the replica's queue bound and the request's deadline, counted from its
        arrival (serving.admission)."""
        if self.admission is None:
            return await self._infer(headers, body, config)
        timeout_s = self.admission.timeout_s(headers)
        remaining_s = self.admission.remaining_s(timeout_s, arrived_at or self.admission.arrival())
        self.admission.admit(remaining_s)
        try:
            async with asyncio.timeout(remaining_s):
                return await self._infer(headers, body, config)
        except TimeoutError:
            raise DeadlineExceeded(
                f"the request's deadline of {timeout_s * 1000:.0f} ms passed before its reply was ready; the "
                "rest of its work was cancelled: allow more with X-Corral-Timeout-Ms (or CORRAL_REQUEST_TIMEOUT_S), "
                "or send smaller batches"
            ) from None
        finally:
            self.admission.release()

    async def _infer(self, headers: dict[str, str], body: bytes, config: RouterConfig) -> Reply:
        if len(body) > self.max_payload_bytes:
            raise self.too_large(len(body))
        decoded = decode_request(
            body, headers.get("content-type"), headers, max_bytes=self.max_payload_bytes, frames=self.frames
        )
        split_key = self.plane.split_key(decoded.data, headers.get("x-corral-split-key"))
        result = await self.plane.infer(decoded.data, split_key)
        payload, reply_headers = encode_response(
            result.outputs,
            decoded,
            model_name=self.plane.pipeline,
            model_version=str(result.version),
            parameters={"variant": result.variant},
        )
        reply_headers["x-corral-pipeline-version"] = str(result.version)
        reply_headers["x-corral-variant"] = result.variant
        reply_headers["x-corral-request-id"] = result.request_id
        self.count_request(200, result.variant)
        return 200, reply_headers, payload

    def _strip_version(self, suffix: str, config: RouterConfig) -> str:
        _, _, version, *rest = suffix.split("/")
        if version != str(config.version):
            raise NotFound(
                f"pipeline {self.plane.pipeline!r} serves version {config.version}, not {version}: "
                "call it without /versions/N or deploy that version"
            )
        return "/" + "/".join(rest) if rest else ""


def _version_header(config: RouterConfig) -> dict[str, str]:
    return {"x-corral-pipeline-version": str(config.version)}


def _json(payload: Any, status: int = 200) -> Reply:
    return status, {"content-type": "application/json"}, orjson.dumps(payload)
